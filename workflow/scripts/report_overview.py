"""Rule report_overview: samples, software versions, configuration and run information."""

import json

import pandas as pd

from mscflow import job
from mscflow.inputs.samplesheet import read_sample_sheet
from mscflow.io import write_table_atomic, write_text_atomic
from mscflow.report.overview import (
    flatten_config,
    git_version,
    overview_html,
    run_info,
    samples_overview,
    software_versions,
)

smk = snakemake  # noqa: F821
log = job.start(smk)
samples = samples_overview(read_sample_sheet(smk.input.sheet),
                           pd.read_csv(smk.input.qc, sep="\t"))
software = software_versions(smk.params.modules)
run_config = json.loads(smk.params.config)
config = flatten_config(run_config)
info = run_info(run_config)
commit = git_version(smk.params.workflow_dir)
log.info("%d samples, %d packages, %d config keys, workflow %s", len(samples), len(software),
         len(config), commit)
write_table_atomic(samples, smk.output.samples)
write_table_atomic(software, smk.output.software)
write_table_atomic(config, smk.output.config)
write_table_atomic(info, smk.output.info)
write_text_atomic(overview_html(info, samples, software, config, workflow_commit=commit),
                  smk.output.html)
