"""Rule trajectory_plot_density: cell density along pseudotime per condition and sample."""

import pandas as pd

from mscflow import job
from mscflow.plotting import save
from mscflow.trajectory.plots import density_figure

smk = snakemake  # noqa: F821
log = job.start(smk)
save(density_figure(pd.read_parquet(smk.input.cells), smk.params.late_quantile),
     smk.output.png)
