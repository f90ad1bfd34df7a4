"""Rule contrast_pseudobulk_de: pydeseq2 per contrast x cell type on summed raw counts."""

from mscflow import job
from mscflow.contrast import pseudobulk_stage, write_tables

smk = snakemake  # noqa: F821
log = job.start(smk)
tables = pseudobulk_stage(smk.input.h5ad, smk.input.samples, smk.params.contrasts,
                          smk.params.settings, counts=smk.input.counts, threads=smk.threads)
write_tables(tables, smk.output)
