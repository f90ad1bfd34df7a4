"""Rule qc_summary: QC table across samples and the QC figures."""

import pandas as pd

from mscflow import job
from mscflow.io import write_table_atomic
from mscflow.plotting import save
from mscflow.qc.plots import doublet_scores, qc_distributions

smk = snakemake  # noqa: F821
log = job.start(smk)
summary = pd.concat([pd.read_csv(p, sep="\t") for p in smk.input.summaries], ignore_index=True)
metrics = pd.concat([pd.read_csv(p, sep="\t") for p in smk.input.metrics], ignore_index=True)
write_table_atomic(summary, smk.output.table)
save(qc_distributions(metrics, summary), smk.output.distributions)
save(doublet_scores(metrics, summary), smk.output.doublets)
log.info("%d samples, %d of %d cells kept", len(summary), summary["cells_out"].sum(),
         summary["cells_in"].sum())
