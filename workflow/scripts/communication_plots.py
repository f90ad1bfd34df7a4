"""Rule communication_plots: dot plot and effect heat map of the focus axes of one contrast."""

import pandas as pd

from mscflow import job
from mscflow.communication.plots import focus_dotplot, focus_heatmap
from mscflow.plotting import save

smk = snakemake  # noqa: F821
log = job.start(smk)
interactions = pd.read_parquet(smk.input.interactions)
contrast = smk.wildcards.contrast
save(focus_dotplot(interactions, contrast, smk.params.max_pairs), smk.output.dotplot)
save(focus_heatmap(interactions, contrast, smk.params.fdr), smk.output.heatmap)
