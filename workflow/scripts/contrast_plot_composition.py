"""Rule contrast_plot_composition: stacked cell-type proportions per sample."""

import pandas as pd

from mscflow import job
from mscflow.plotting_contrast import composition_bars, save_figure

smk = snakemake  # noqa: F821
log = job.start(smk)
props = pd.read_csv(smk.input.proportions, sep="\t", dtype={"sample": str})
save_figure(composition_bars(props, pd.read_parquet(smk.input.tests)), smk.output.png)
