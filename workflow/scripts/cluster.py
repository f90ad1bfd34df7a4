"""Rule cluster: merge QC-filtered samples, normalise, embed, cluster, find markers."""

from mscflow.cluster import (
    ClusterSettings,
    embed_graph,
    leiden_all,
    leiden_key,
    marker_genes,
    merge_sample_files,
    normalise,
    resolution_agreement,
    timed,
    umap_alongside,
)
from mscflow.io import write_h5ad_atomic, write_table_atomic
from mscflow.workflow import setup_logging

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
settings = ClusterSettings.from_config({**smk.params.cluster, "n_jobs": smk.threads},
                                      seed=smk.params.seed)
# the UMAP process imports now and runs UMAP on the other core during Leiden and markers
with umap_alongside() as umap:
    with timed("read + merge"):
        adata = merge_sample_files(smk.input.h5ads)
    log.info("merged %d cells x %d genes from %d samples", adata.n_obs, adata.n_vars,
             adata.obs["sample"].nunique())
    with timed("normalise"):
        normalise(adata, settings.target_sum)
    embed_graph(adata, settings)
    umap.submit(adata, settings)
    leiden_all(adata, settings)
    keys = [leiden_key(r) for r in settings.resolutions]
    for key in keys:
        log.info("%s: %d clusters", key, adata.obs[key].nunique())
    with timed("markers"):
        markers = marker_genes(adata, leiden_key(settings.default_resolution),
                               settings.marker_method)
    umap.collect(adata)
write_table_atomic(markers, smk.output.markers)
write_table_atomic(resolution_agreement(adata.obs, keys), smk.output.agreement)
with timed("write h5ad"):
    write_h5ad_atomic(adata, smk.output.h5ad, compression=smk.params.compression)
