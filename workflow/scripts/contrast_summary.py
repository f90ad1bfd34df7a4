"""Rule contrast_summary: tests, skips and untestable designs per analysis and contrast."""

import pandas as pd

from mscflow.contrast import contrast_summary, write_table
from mscflow.workflow import setup_logging

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
tables = {name: pd.read_parquet(path) for name, path in smk.input.items()}
summary = contrast_summary(tables)
for row in summary.itertuples():
    if row.n_no_test:
        log.warning("%s / %s: no test possible for %d unit(s): %s", row.analysis, row.contrast,
                    row.n_no_test, row.reasons_not_tested)
write_table(summary, smk.output.tsv)
