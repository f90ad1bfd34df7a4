"""Rule crosscheck_sources: the marker labels against published or reference labels."""

from mscflow import job
from mscflow.annotate.labels import crosscheck_sources, read_obs
from mscflow.io import write_table_atomic
from mscflow.plotting import save

smk = snakemake  # noqa: F821
log = job.start(smk)
per_label, clusters, figure = crosscheck_sources(read_obs(smk.input.h5ad), smk.wildcards.source,
                                                 smk.params.cluster_key)
write_table_atomic(per_label, smk.output.agreement)
write_table_atomic(clusters, smk.output.clusters)
save(figure, smk.output.figure)
