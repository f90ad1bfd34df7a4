"""Rule score_sample: score the library's programme and marker sets in one sample's cells."""

from mscflow import job
from mscflow.genesets import read_library
from mscflow.io import write_table_atomic
from mscflow.scoring.core import GeneStats, ScoringSettings, score_sample

smk = snakemake  # noqa: F821
log = job.start(smk)
settings = ScoringSettings.from_config(smk.params.scoring)
scores, markers = score_sample(smk.input.h5ad, smk.wildcards.sample,
                               read_library(smk.input.library), settings,
                               GeneStats.load(smk.input.stats), random_state=smk.params.seed,
                               n_threads=smk.threads)
log.info("sample %s: scored %d programme and %d marker sets on %d cells (method %s)",
         smk.wildcards.sample, scores.shape[1], markers.shape[1], len(scores),
         settings.method)
for table, path in ((scores, smk.output.scores), (markers, smk.output.markers)):
    table.index.name = "cell"
    write_table_atomic(table, path, index=True)
