"""Rule contrast_gsea: gseapy prerank of the pseudobulk Wald statistics on the run's scored
programme sets (the gene-set library)."""

from mscflow import job
from mscflow.contrast import gsea_stage, write_tables

smk = snakemake  # noqa: F821
log = job.start(smk)
tables = gsea_stage(smk.input.de, smk.input.library, smk.params.settings, threads=smk.threads)
write_tables(tables, smk.output)
