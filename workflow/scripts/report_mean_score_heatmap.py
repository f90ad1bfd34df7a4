"""Rule report_mean_score_heatmap: mean score per cell type and gene set for one condition."""

import pandas as pd

from mscflow.plotting import mean_score_heatmap, save
from mscflow.workflow import setup_logging

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
mean_scores = pd.read_csv(smk.input.mean_scores, sep="\t")
log.info("condition %s: %d rows", smk.params.condition,
         (mean_scores["condition"].astype(str) == smk.params.condition).sum())
save(mean_score_heatmap(mean_scores, smk.params.condition), smk.output.figure)
