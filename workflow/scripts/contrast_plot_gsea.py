"""Rule contrast_plot_gsea: running enrichment of the efferocytosis and IL-10 sets."""

from mscflow import job
from mscflow.contrast.plots import gsea_figure
from mscflow.plotting import save

smk = snakemake  # noqa: F821
log = job.start(smk)
fig = gsea_figure(smk.input.de, smk.input.gsea, smk.input.library, smk.wildcards.contrast,
                  smk.params.settings)
save(fig, smk.output.png, dpi=120)
