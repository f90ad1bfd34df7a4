"""Rule contrast_plot_forest: forest plot of the gene-set score shifts."""

import pandas as pd

from mscflow.contrast import parse_settings
from mscflow.plotting_contrast import forest_plot, save_figure
from mscflow.workflow import setup_logging

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
settings = parse_settings(smk.params.settings)
shifts = pd.read_parquet(smk.input.shifts)
save_figure(forest_plot(shifts, "mean", settings.fdr, settings.forest_sets), smk.output.png)
