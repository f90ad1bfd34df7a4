"""Rule compare_labels: a published label column against mscflow's cell_type."""

import json

from mscflow import job
from mscflow.annotate.labels import compare_labels, read_obs
from mscflow.io import write_table_atomic
from mscflow.plotting import save

smk = snakemake  # noqa: F821
log = job.start(smk)
table, figure = compare_labels(read_obs(smk.input.h5ad), json.loads(smk.params.column))
write_table_atomic(table, smk.output.table)
save(figure, smk.output.figure)
