"""Rule contrast_plot_forest: forest plot of the gene-set score shifts."""

from mscflow import job
from mscflow.contrast.plots import forest_figure
from mscflow.plotting import save

smk = snakemake  # noqa: F821
log = job.start(smk)
save(forest_figure(smk.input.shifts, smk.params.settings), smk.output.png, dpi=120)
