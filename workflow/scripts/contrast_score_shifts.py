"""Rule contrast_score_shifts: per-sample gene-set score summaries and their condition tests."""

import anndata as ad

from mscflow.contrast import (
    parse_contrasts,
    parse_settings,
    per_sample_scores,
    score_columns,
    score_shifts,
    write_table,
)
from mscflow.workflow import read_sample_sheet, setup_logging

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
samples = read_sample_sheet(smk.input.samples)
contrasts = parse_contrasts(smk.params.contrasts, samples)
settings = parse_settings(smk.params.settings)
obs = ad.read_h5ad(smk.input.h5ad, backed="r").obs.copy()
cols = ([f"{settings.score_prefix}{s}" for s in settings.score_sets]
        or score_columns(obs, settings.score_prefix))
per_sample = per_sample_scores(obs, cols, settings.score_threshold, settings.score_prefix)
table = score_shifts(obs, contrasts, settings, samples, per_sample=per_sample)
for status, n in table["status"].value_counts().items():
    log.info("score shifts: %d rows %s", n, status)
log.info("score shifts: %d significant at FDR %s", int(table["significant"].sum()), settings.fdr)
write_table(table, smk.output.tsv, smk.output.parquet)
write_table(per_sample, smk.output.per_sample)
