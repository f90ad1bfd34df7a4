"""Rule report_findings: the calls of every registered contrast table in sentences, the
overview heat map, and the calls as a table."""

from mscflow import job
from mscflow.io import write_table_atomic, write_text_atomic
from mscflow.plotting import save
from mscflow.report.findings import findings_stage
from mscflow.report.overview import ReportSettings

smk = snakemake  # noqa: F821
log = job.start(smk)
settings = ReportSettings.from_config(smk.params.report, seed=smk.params.seed)
for name, path in smk.input.items():
    log.info("table %s: %s", name, path)
page, calls, figure = findings_stage(dict(smk.input.items()), fdr=smk.params.fdr,
                                     power=settings.findings_power,
                                     min_effect=settings.findings_min_effect,
                                     annotation=smk.params.annotation)
log.info("%d calls", len(calls))
save(figure, smk.output.figure)
write_table_atomic(calls, smk.output.tsv, na_rep="NA", float_format="%.6g")
write_text_atomic(page, smk.output.html)
