"""Rule summarise: cluster sizes per sample and mean scores per cluster and sample."""

import anndata as ad

from mscflow import job
from mscflow.cluster.core import cluster_sizes
from mscflow.io import write_table_atomic
from mscflow.report.summary import mean_scores

smk = snakemake  # noqa: F821
log = job.start(smk)
obs = ad.read_h5ad(smk.input.h5ad, backed="r").obs
write_table_atomic(cluster_sizes(obs, smk.params.cluster_key), smk.output.sizes)
write_table_atomic(mean_scores(obs, smk.params.cluster_key), smk.output.mean_scores)
