"""Rule scoring_gene_stats: per-gene statistics of every cell, for the per-sample scoring."""

import anndata as ad

from mscflow import job
from mscflow.scoring.core import gene_stats_for

smk = snakemake  # noqa: F821
log = job.start(smk)
# backed: the matrix is streamed in chunks (the same statistics as in memory, to the bit)
adata = ad.read_h5ad(smk.input.h5ad, backed="r")
stats = gene_stats_for(adata, smk.params.method, n_threads=smk.threads)
log.info("gene statistics of %d cells x %d genes (for method %s)", adata.n_obs, adata.n_vars,
         smk.params.method)
stats.save(smk.output[0])
