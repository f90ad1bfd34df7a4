"""Rule score_programmes: score the library's programme and marker sets in every cell."""

import anndata as ad

from mscflow import job
from mscflow.genesets import read_library
from mscflow.io import write_table_atomic
from mscflow.scoring import ScoringSettings, score_library

smk = snakemake  # noqa: F821
log = job.start(smk)
# backed: the kernel streams the matrix in chunks (same scores as in memory, to the bit)
adata = ad.read_h5ad(smk.input.h5ad, backed="r")
settings = ScoringSettings.from_config(smk.params.scoring)
scores, markers = score_library(adata, read_library(smk.input.library), settings,
                                random_state=smk.params.seed, n_threads=smk.threads)
log.info("scored %d programme and %d marker sets on %d cells (method %s)", scores.shape[1],
         markers.shape[1], scores.shape[0], settings.method)
for table, path in ((scores, smk.output.scores), (scores, smk.output.table),
                    (markers, smk.output.markers)):
    table.index.name = "cell"
    write_table_atomic(table, path, index=True)
