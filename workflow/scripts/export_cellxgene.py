"""Rule export_cellxgene: the annotated cells laid out for cellxgene and other viewers."""

from mscflow import job
from mscflow.io import write_h5ad_atomic
from mscflow.report.export import export_stage
from mscflow.report.overview import ReportSettings

smk = snakemake  # noqa: F821
log = job.start(smk)
settings = ReportSettings.from_config(smk.params.report, seed=smk.params.seed)
adata = export_stage(smk.input.h5ad, counts=smk.input.counts if settings.export_counts else None,
                     cluster_key=smk.params.cluster_key, target_sum=smk.params.target_sum)
log.info("export: %d cells x %d genes, obs columns %s", adata.n_obs, adata.n_vars,
         list(adata.obs.columns))
write_h5ad_atomic(adata, smk.output.h5ad, compression=smk.params.compression)
