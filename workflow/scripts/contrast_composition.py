"""Rule contrast_composition: cell-type proportions per sample and their condition tests."""

from mscflow import job
from mscflow.contrast import composition_stage, write_tables

smk = snakemake  # noqa: F821
log = job.start(smk)
tables = composition_stage(smk.input.h5ad, smk.input.samples, smk.params.contrasts,
                           smk.params.settings)
write_tables(tables, smk.output)
