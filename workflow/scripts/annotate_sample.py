"""Rule annotate_sample: one sample's expression summed per cluster (for the annotation)."""

from mscflow import job
from mscflow.annotate.core import sample_group_expression

smk = snakemake  # noqa: F821
log = job.start(smk)
expression = sample_group_expression(smk.input.h5ad, smk.wildcards.sample,
                                     smk.params.cluster_key)
log.info("sample %s: %d cells in %d cluster groups", smk.wildcards.sample,
         int(expression.sizes.sum()), len(expression.groups))
expression.save(smk.output[0])
