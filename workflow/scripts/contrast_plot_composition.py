"""Rule contrast_plot_composition: stacked cell-type proportions per sample."""

import pandas as pd

from mscflow.plotting_contrast import composition_bars, save_figure
from mscflow.workflow import setup_logging

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
props = pd.read_csv(smk.input.proportions, sep="\t", dtype={"sample": str})
save_figure(composition_bars(props, pd.read_parquet(smk.input.tests)), smk.output.png)
