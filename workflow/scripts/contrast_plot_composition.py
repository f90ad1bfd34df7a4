"""Rule contrast_plot_composition: stacked cell-type proportions per sample."""

import pandas as pd

from mscflow import job
from mscflow.contrast.plots import composition_bars
from mscflow.plotting import save

smk = snakemake  # noqa: F821
log = job.start(smk)
props = pd.read_csv(smk.input.proportions, sep="\t", dtype={"sample": str})
save(composition_bars(props, pd.read_parquet(smk.input.tests)), smk.output.png, dpi=120)
