"""Rule trajectory_shifts: per-sample median pseudotime and late fraction per branch,
tested between the conditions of every contrast (samples as replicates)."""

from mscflow import job
from mscflow.contrast import write_tables
from mscflow.trajectory.core import TrajectorySettings, shifts_stage

smk = snakemake  # noqa: F821
log = job.start(smk)
settings = TrajectorySettings.from_config(smk.params.settings, random_state=smk.params.seed,
                                          n_jobs=smk.threads)
tables = shifts_stage(smk.input.cells, smk.input.tissues, smk.input.samples,
                      smk.params.contrasts, smk.params.contrast_settings, settings)
write_tables(tables, smk.output)
