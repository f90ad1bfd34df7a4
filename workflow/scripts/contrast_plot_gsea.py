"""Rule contrast_plot_gsea: running enrichment of the efferocytosis and IL-10 sets."""

from mscflow import job
from mscflow.plotting_contrast import gsea_figure, save_figure

smk = snakemake  # noqa: F821
log = job.start(smk)
fig = gsea_figure(smk.input.de, smk.input.gsea, smk.input.library, smk.wildcards.contrast,
                  smk.params.settings)
save_figure(fig, smk.output.png)
