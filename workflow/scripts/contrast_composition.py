"""Rule contrast_composition: cell-type proportions per sample and their condition tests."""

import anndata as ad

from mscflow.contrast import (
    composition_counts,
    composition_tests,
    parse_contrasts,
    parse_settings,
    write_table,
)
from mscflow.workflow import read_sample_sheet, setup_logging

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
samples = read_sample_sheet(smk.input.samples)
contrasts = parse_contrasts(smk.params.contrasts, samples)
settings = parse_settings(smk.params.settings)
obs = ad.read_h5ad(smk.input.h5ad, backed="r").obs.copy()
counts = composition_counts(obs)
table = composition_tests(obs, contrasts, settings, samples, counts=counts)
log.info("composition (%s): %d tests, %d significant at FDR %s", settings.composition_test,
         int((table["status"] == "tested").sum()), int(table["significant"].sum()), settings.fdr)
write_table(table, smk.output.tsv, smk.output.parquet)
write_table(counts, smk.output.proportions)
