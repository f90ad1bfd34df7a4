"""Rule contrast_summary: tests, skips and untestable designs per analysis and contrast."""

from mscflow import job
from mscflow.contrast import summary_stage, write_tables

smk = snakemake  # noqa: F821
log = job.start(smk)
write_tables(summary_stage(dict(smk.input.items())), smk.output)
