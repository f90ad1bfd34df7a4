"""Rule trajectory: PAGA, diffusion map and pseudotime of the monocyte/macrophage lineage
per tissue, and the programme scores along pseudotime."""

from mscflow import job
from mscflow.contrast import write_tables
from mscflow.io import write_h5ad_atomic
from mscflow.trajectory.core import TrajectorySettings, trajectory_stage

smk = snakemake  # noqa: F821
log = job.start(smk)
settings = TrajectorySettings.from_config(smk.params.settings, random_state=smk.params.seed,
                                          n_jobs=smk.threads)
outputs = trajectory_stage(smk.input.h5ad, smk.input.marker_scores, settings,
                           cluster_key=smk.params.cluster_key)
write_h5ad_atomic(outputs.pop("h5ad"), smk.output.h5ad, compression=smk.params.compression)
write_tables(outputs, smk.output)
