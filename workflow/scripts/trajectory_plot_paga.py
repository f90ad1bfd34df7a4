"""Rule trajectory_plot_paga: the PAGA graph of every tissue over the run's UMAP."""

import anndata as ad

from mscflow import job
from mscflow.plotting import save
from mscflow.trajectory.plots import paga_figure

smk = snakemake  # noqa: F821
log = job.start(smk)
save(paga_figure(ad.read_h5ad(smk.input.h5ad), smk.params.threshold), smk.output.png)
