"""Rule cluster: merge QC-filtered samples, normalise, embed, cluster, find markers."""

from mscflow import job
from mscflow.cluster.core import ClusterSettings, cluster_samples
from mscflow.io import write_h5ad_atomic, write_table_atomic

smk = snakemake  # noqa: F821
job.start(smk)
settings = ClusterSettings.from_config(smk.params.cluster, n_jobs=smk.threads,
                                       random_state=smk.params.seed,
                                       batch_key=smk.params.batch_key)
adata, markers, agreement = cluster_samples(smk.input.h5ads, settings)
write_table_atomic(markers, smk.output.markers)
write_table_atomic(agreement, smk.output.agreement)
with job.timed("write h5ad"):
    write_h5ad_atomic(adata, smk.output.h5ad, compression=smk.params.compression)
