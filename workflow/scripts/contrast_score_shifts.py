"""Rule contrast_score_shifts: per-sample gene-set score summaries and their condition tests."""

from mscflow import job
from mscflow.contrast import score_shifts_stage, write_tables

smk = snakemake  # noqa: F821
log = job.start(smk)
tables = score_shifts_stage(smk.input.h5ad, smk.input.samples, smk.params.contrasts,
                            smk.params.settings)
write_tables(tables, smk.output)
