"""Rule trajectory_plot_programmes: programme scores along pseudotime per condition, with
one line per sample."""

import json

import pandas as pd

from mscflow import job
from mscflow.plotting import save
from mscflow.trajectory.plots import programme_figure

smk = snakemake  # noqa: F821
log = job.start(smk)
bins = pd.read_csv(smk.input.bins, sep="\t", keep_default_na=False, na_values=["NA"])
save(programme_figure(bins, json.loads(smk.params.sets)), smk.output.png)
