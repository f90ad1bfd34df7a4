"""Rule communication_contrasts: ligand-receptor interactions tested between the conditions
of every contrast (samples as replicates), focus axes first, with the receiver's response."""

from mscflow import job
from mscflow.communication.contrast import communication_contrast_stage
from mscflow.contrast import write_tables

smk = snakemake  # noqa: F821
log = job.start(smk)
tables = communication_contrast_stage(
    smk.input.expression, smk.input.skipped, smk.input.samples, smk.params.contrasts,
    smk.params.contrast_settings, smk.params.settings, species=smk.params.species,
    seed=smk.params.seed, score_shifts=smk.input.score_shifts)
write_tables(tables, smk.output)
