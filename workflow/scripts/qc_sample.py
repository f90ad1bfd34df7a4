"""Rule qc_sample: read one sample, compute QC, flag, detect doublets, filter.

Bad input (unreadable, not raw counts, wrong species, too few cells with
``qc.on_too_few_cells: stop``) ends the job with one clear message in the log and on stderr;
nothing is written under the output names.
"""

import sys

from mscflow.io import (
    InputDataError,
    check_species,
    prefix_barcodes,
    read_sample,
    write_h5ad_atomic,
    write_table_atomic,
)
from mscflow.qc import QCThresholds, run_sample_qc, too_few_cells_message
from mscflow.workflow import setup_logging

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
meta = smk.params.meta
sample = smk.wildcards.sample
qc = smk.params.qc
try:
    adata = read_sample(smk.input.data, smk.params.fmt, sample=sample,
                        layer=smk.params.layer or None)
    check_species(adata, meta["species"], sample=sample, source=str(smk.input.data))
except InputDataError as err:
    log.error("%s", err)
    sys.exit(1)
log.info("read %s: %d cells x %d genes", sample, adata.n_obs, adata.n_vars)
prefix_barcodes(adata, sample)
for key, value in meta.items():
    adata.obs[key] = value
filtered, metrics, summary = run_sample_qc(
    adata, sample=sample, species=meta["species"], thresholds=QCThresholds.from_config(qc),
    random_state=smk.params.seed, expected_doublet_rate=qc["expected_doublet_rate"],
)
message = too_few_cells_message(summary, qc["min_cells_per_sample"])
if message and qc["on_too_few_cells"] == "stop":
    log.error("%s", message)
    sys.exit(1)
if message:
    log.warning("%s -- dropping the sample (qc.on_too_few_cells: drop)", message)
    filtered = filtered[:0].copy()
    summary["dropped"] = True
else:
    summary["dropped"] = False
log.info("kept %d of %d cells", filtered.n_obs, adata.n_obs)
write_table_atomic(metrics, smk.output.metrics)
write_table_atomic(summary, smk.output.summary)
write_h5ad_atomic(filtered, smk.output.h5ad, compression=smk.params.compression)
