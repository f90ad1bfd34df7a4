"""Rule plot_embeddings: UMAPs, score violins and the marker dot plot."""

import json

import anndata as ad
import scanpy as sc

from mscflow import job
from mscflow.cluster.plots import umap_panels
from mscflow.plotting import save, set_style
from mscflow.scoring.plots import score_violins

smk = snakemake  # noqa: F821
log = job.start(smk)
adata = ad.read_h5ad(smk.input.h5ad)
key = smk.params.cluster_key
save(umap_panels(adata, [key, "sample", "condition", "cell_type"],
                 titles={key: f"Leiden clusters ({key})"}), smk.output.overview)
sets = [s for s in json.loads(smk.params.report_sets) if f"score_{s}" in adata.obs]
log.info("drawing scores of %s", sets)
save(umap_panels(adata, [f"score_{s}" for s in sets], ncols=3), smk.output.scores)
save(score_violins(adata.obs, sets), smk.output.violins)
set_style()
dot = sc.pl.rank_genes_groups_dotplot(adata, key=f"markers_{key}", n_genes=3, show=False,
                                      return_fig=True)
dot.savefig(smk.output.markers, bbox_inches="tight")
