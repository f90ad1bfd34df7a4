"""Rule report_explorer: the interactive UMAP page (plotly.js and the cells embedded)."""

from mscflow import job
from mscflow.io import write_text_atomic
from mscflow.report.explorer import explorer_stage
from mscflow.report.overview import ReportSettings

smk = snakemake  # noqa: F821
log = job.start(smk)
settings = ReportSettings.from_config(smk.params.report, seed=smk.params.seed)
with job.timed("explorer"):
    page = explorer_stage(smk.input.h5ad, smk.input.library, settings,
                          cluster_key=smk.params.cluster_key)
log.info("explorer page: %.1f MB", len(page) / 1e6)
write_text_atomic(page, smk.output.html)
