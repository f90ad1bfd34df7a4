"""Rule integration_metrics: batch mixing and cell-type conservation before and after."""

import anndata as ad

from mscflow import job
from mscflow.cluster.core import ClusterSettings
from mscflow.cluster.integration_metrics import before_after_figure, integration_evidence
from mscflow.io import write_table_atomic
from mscflow.plotting import save

smk = snakemake  # noqa: F821
job.start(smk)
settings = ClusterSettings.from_config(smk.params.cluster, n_jobs=smk.threads,
                                       random_state=smk.params.seed,
                                       batch_key=smk.params.batch_key)
adata = ad.read_h5ad(smk.input.h5ad, backed="r")
table, drawn = integration_evidence(adata, settings)
write_table_atomic(table, smk.output.metrics)
save(before_after_figure(drawn, settings.batch_key), smk.output.umap)
