"""Rule annotate: label clusters with lung/liver populations; assemble the final AnnData."""

import anndata as ad
import pandas as pd

from mscflow.annotate import annotate, marker_dotplot_data
from mscflow.genesets import load_gene_sets, match_gene_sets, read_synonyms
from mscflow.io import write_h5ad_atomic, write_table_atomic
from mscflow.plotting import marker_set_dotplot, save
from mscflow.workflow import setup_logging

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
params = smk.params
adata = ad.read_h5ad(smk.input.h5ad)
scores = pd.read_parquet(smk.input.scores)
markers, report = match_gene_sets(
    load_gene_sets([smk.input.markers]), adata.var_names, set_species=params.species,
    data_species=params.species, min_genes=params.min_genes,
    synonyms=read_synonyms(smk.input.synonyms),
)
settings = params.annotation
per_cell, per_cluster = annotate(
    adata, markers, cluster_key=params.cluster_key, tissue_key="tissue",
    min_margin=settings.get("min_margin", 0.05),
    min_fraction=settings.get("min_fraction", 0.5), random_state=params.seed,
    key_added="cell_type",
)
for label, n in adata.obs["cell_type"].value_counts().items():
    log.info("%s: %d cells", label, n)
for column in scores.columns:
    adata.obs[f"score_{column}"] = scores.loc[adata.obs_names, column].to_numpy()
dot = marker_dotplot_data(adata, markers, groupby="cell_type")
save(marker_set_dotplot(dot), smk.output.dotplot)
per_cell.index.name = "cell"
write_table_atomic(per_cell, smk.output.cells, index=True)
write_table_atomic(per_cluster, smk.output.clusters)
write_h5ad_atomic(adata, smk.output.h5ad, compression=smk.params.compression)
