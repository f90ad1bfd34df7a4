"""Rule report_mean_score_heatmap: mean score per cell type and gene set for one condition."""

import pandas as pd

from mscflow import job
from mscflow.plotting import save
from mscflow.scoring.plots import mean_score_heatmap

smk = snakemake  # noqa: F821
log = job.start(smk)
mean_scores = pd.read_csv(smk.input.mean_scores, sep="\t")
log.info("condition %s: %d rows", smk.params.condition,
         (mean_scores["condition"].astype(str) == smk.params.condition).sum())
save(mean_score_heatmap(mean_scores, smk.params.condition), smk.output.figure)
