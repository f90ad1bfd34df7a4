"""Rule communication_sample: liana on one sample's cell types, its per-cell-type gene
expression (the input of the tests) and the cell types left out."""

from mscflow import job
from mscflow.communication.sample import communication_sample_stage
from mscflow.contrast import write_tables

smk = snakemake  # noqa: F821
log = job.start(smk)
tables = communication_sample_stage(smk.input.h5ad, smk.wildcards.sample, smk.params.species,
                                    smk.params.settings, seed=smk.params.seed,
                                    threads=smk.threads)
write_tables(tables, smk.output)
