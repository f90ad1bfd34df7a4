"""Rule qc_sample: read one sample, compute QC, flag, detect doublets, filter.

Bad input (unreadable, not raw counts, wrong species, too few cells with
``qc.on_too_few_cells: stop``) ends the job with one clear message in the log and on stderr;
nothing is written under the output names.
"""

from mscflow import job
from mscflow.io import write_h5ad_atomic, write_table_atomic
from mscflow.qc.core import QCSettings, qc_sample

smk = snakemake  # noqa: F821
job.start(smk)
filtered, metrics, summary = qc_sample(
    smk.input.data, smk.params.fmt, sample=smk.wildcards.sample, metadata=smk.params.meta,
    settings=QCSettings.from_config(smk.params.qc), random_state=smk.params.seed,
    **smk.params.reading,
)
write_table_atomic(metrics, smk.output.metrics)
write_table_atomic(summary, smk.output.summary)
write_h5ad_atomic(filtered, smk.output.h5ad, compression=smk.params.compression)
