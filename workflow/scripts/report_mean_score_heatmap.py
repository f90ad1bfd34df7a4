"""Rule report_mean_score_heatmap: mean score per cell type and gene set for one condition."""

import json

import pandas as pd

from mscflow import job
from mscflow.plotting import save
from mscflow.scoring.plots import mean_score_heatmap

smk = snakemake  # noqa: F821
log = job.start(smk)
condition = json.loads(smk.params.condition)  # as written in the sample sheet
mean_scores = pd.read_csv(smk.input.mean_scores, sep="\t")
log.info("condition %s: %d rows", condition,
         (mean_scores["condition"].astype(str) == condition).sum())
save(mean_score_heatmap(mean_scores, condition), smk.output.figure)
