"""Rule contrast_plot_forest: forest plot of the gene-set score shifts."""

from mscflow import job
from mscflow.plotting_contrast import forest_figure, save_figure

smk = snakemake  # noqa: F821
log = job.start(smk)
save_figure(forest_figure(smk.input.shifts, smk.params.settings), smk.output.png)
