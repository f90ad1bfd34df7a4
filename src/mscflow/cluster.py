"""Merging samples, normalisation, embedding, Leiden clustering and marker genes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import anndata as ad
import pandas as pd
import scanpy as sc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterSettings:
    """Settings of the config section ``cluster``."""

    target_sum: float = 1e4
    n_top_genes: int = 2000
    n_pcs: int = 30
    n_neighbors: int = 15
    resolutions: tuple[float, ...] = (0.5, 1.0)
    default_resolution: float = 1.0
    leiden_iterations: int = 2
    marker_method: str = "t-test"
    umap_min_dist: float = 0.5
    random_state: int = 0

    @classmethod
    def from_config(cls, cluster: dict, seed: int) -> ClusterSettings:
        """Build from the config's ``cluster`` mapping and the global seed."""
        names = cls.__dataclass_fields__
        kwargs = {k: v for k, v in cluster.items() if k in names}
        if "resolutions" in kwargs:
            kwargs["resolutions"] = tuple(float(r) for r in kwargs["resolutions"])
        return cls(**kwargs, random_state=seed)


def leiden_key(resolution: float) -> str:
    """obs column holding the Leiden clusters at ``resolution``."""
    return f"leiden_{float(resolution):g}"


def merge_samples(samples: Sequence[ad.AnnData]) -> ad.AnnData:
    """Concatenate per-sample AnnData on their shared genes; keep counts in ``layers``."""
    kept = [a for a in samples if a.n_obs > 0]
    if not kept:
        raise ValueError("no sample has cells left after QC; nothing to cluster")
    n_genes = [a.n_vars for a in kept]
    merged = ad.concat(kept, join="inner", merge="same")
    if merged.n_vars < max(n_genes):
        log.warning("merged on %d shared genes (samples had %s)", merged.n_vars, n_genes)
    for col in ("sample", "tissue", "condition", "species"):
        if col in merged.obs:
            merged.obs[col] = merged.obs[col].astype("category")
    merged.layers["counts"] = merged.X.copy()
    return merged


def normalise(adata: ad.AnnData, target_sum: float) -> None:
    """Total-count normalisation and log1p of X (counts stay in ``layers['counts']``)."""
    sc.pp.normalize_total(adata, target_sum=target_sum)
    sc.pp.log1p(adata)


def embed_and_cluster(adata: ad.AnnData, settings: ClusterSettings) -> None:
    """HVG across samples, PCA, neighbours, Leiden at every resolution, UMAP (in place)."""
    batch_key = "sample" if adata.obs["sample"].nunique() > 1 else None
    sc.pp.highly_variable_genes(adata, n_top_genes=settings.n_top_genes, flavor="seurat",
                                batch_key=batch_key)
    n_pcs = min(settings.n_pcs, adata.n_obs - 1, int(adata.var["highly_variable"].sum()) - 1)
    sc.pp.pca(adata, n_comps=n_pcs, mask_var="highly_variable",
              random_state=settings.random_state)
    sc.pp.neighbors(adata, n_neighbors=settings.n_neighbors, n_pcs=n_pcs,
                    random_state=settings.random_state)
    for res in settings.resolutions:
        sc.tl.leiden(adata, resolution=res, key_added=leiden_key(res), flavor="leidenalg",
                     random_state=settings.random_state,
                     n_iterations=settings.leiden_iterations)
    sc.tl.umap(adata, min_dist=settings.umap_min_dist, random_state=settings.random_state)


def marker_genes(adata: ad.AnnData, groupby: str, method: str, n_genes: int = 25) -> pd.DataFrame:
    """Top marker genes per cluster as a tidy table (rank_genes_groups on log data)."""
    sc.tl.rank_genes_groups(adata, groupby=groupby, method=method, n_genes=n_genes,
                            key_added=f"markers_{groupby}")
    df = sc.get.rank_genes_groups_df(adata, group=None, key=f"markers_{groupby}")
    df.insert(0, "clustering", groupby)
    return df.rename(columns={"names": "gene"})


def cluster_sizes(obs: pd.DataFrame, cluster_key: str) -> pd.DataFrame:
    """Cells per cluster and sample (long table)."""
    table = obs.groupby([cluster_key, "sample"], observed=True).size()
    return table.rename("n_cells").reset_index().rename(columns={cluster_key: "cluster"})


def resolution_agreement(obs: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Cluster counts and pairwise adjusted Rand index between resolutions."""
    from sklearn.metrics import adjusted_rand_score

    rows = []
    for a in keys:
        for b in keys:
            rows.append({
                "clustering_a": a, "clustering_b": b,
                "n_clusters_a": obs[a].nunique(), "n_clusters_b": obs[b].nunique(),
                "adjusted_rand_index": adjusted_rand_score(obs[a], obs[b]),
            })
    return pd.DataFrame(rows)
