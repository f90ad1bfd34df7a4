"""Rule report_overview: samples, software versions, configuration and run information."""

from pathlib import Path

import pandas as pd

from mscflow.io import write_table_atomic
from mscflow.report import (
    flatten_config,
    git_version,
    overview_html,
    run_info,
    samples_overview,
    software_versions,
)
from mscflow.workflow import read_sample_sheet, setup_logging

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
samples = samples_overview(read_sample_sheet(smk.input.sheet),
                           pd.read_csv(smk.input.qc, sep="\t"))
software = software_versions(smk.params.modules)
config = flatten_config(smk.params.config)
info = run_info(smk.params.config)
commit = git_version(smk.params.workflow_dir)
log.info("%d samples, %d packages, %d config keys, workflow %s", len(samples), len(software),
         len(config), commit)
write_table_atomic(samples, smk.output.samples)
write_table_atomic(software, smk.output.software)
write_table_atomic(config, smk.output.config)
write_table_atomic(info, smk.output.info)
html = Path(smk.output.html)
tmp = html.with_name(f".{html.name}.tmp")
tmp.write_text(overview_html(info, samples, software, config, workflow_commit=commit))
tmp.replace(html)
