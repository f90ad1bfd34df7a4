"""Rule contrast_plot_volcano: pseudobulk DE volcano per cell type of one contrast."""

import pandas as pd

from mscflow.plotting_contrast import save_figure, volcano_plot
from mscflow.workflow import setup_logging

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
de = pd.read_parquet(smk.input.de)
save_figure(volcano_plot(de, smk.wildcards.contrast, smk.params.fdr), smk.output.png)
