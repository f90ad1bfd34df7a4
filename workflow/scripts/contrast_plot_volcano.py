"""Rule contrast_plot_volcano: pseudobulk DE volcano per cell type of one contrast."""

import pandas as pd

from mscflow import job
from mscflow.contrast.plots import volcano_plot
from mscflow.plotting import save

smk = snakemake  # noqa: F821
log = job.start(smk)
de = pd.read_parquet(smk.input.de)
save(volcano_plot(de, smk.wildcards.contrast, smk.params.fdr), smk.output.png, dpi=120)
