"""Rule gather_scores: the per-sample score tables as one, in the merged object's order."""

import anndata as ad
import pandas as pd

from mscflow import job
from mscflow.io import write_table_atomic
from mscflow.scoring.core import combine_sample_scores

smk = snakemake  # noqa: F821
log = job.start(smk)
backed = ad.read_h5ad(smk.input.h5ad, backed="r")
cells = backed.obs_names.copy()
backed.file.close()
scores = combine_sample_scores([pd.read_parquet(p) for p in smk.input.scores], cells)
markers = combine_sample_scores([pd.read_parquet(p) for p in smk.input.markers], cells)
log.info("gathered the scores of %d cells from %d samples", len(cells), len(smk.input.scores))
for table, path in ((scores, smk.output.scores), (scores, smk.output.table),
                    (markers, smk.output.markers)):
    table.index.name = "cell"
    write_table_atomic(table, path, index=True)
