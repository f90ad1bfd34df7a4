"""Evidence of batch integration: batch mixing and biological conservation, before and after.

The metrics follow scIB (Luecken et al. 2022), written with numpy and scikit-learn:

* **LISI** (Korsunsky et al. 2019): per cell, the inverse Simpson index of the labels among
  its ``3 x perplexity`` nearest neighbours (self excluded, Euclidean distances), weighted by
  a Gaussian kernel whose width is set per cell to the perplexity; the same algorithm as
  ``harmonypy.compute_lisi`` and R's ``lisi``. Neighbours come from the embedding, or, for a
  method that corrects the graph (BBKNN), from shortest paths on the graph (as scIB's graph
  LISI). iLISI (labels = batches) is scaled as scIB does, ``(median - 1) / (batches - 1)``:
  0 = no mixing, 1 = perfect mixing; cLISI (labels = cell types) as ``(types - median) /
  (types - 1)``: 1 = neighbourhoods of one type.
* **ASW**: cell-type ASW ``(silhouette + 1) / 2`` (1 = compact, separate types); batch ASW
  per cell type ``1 - |silhouette of batches|`` averaged per type, then over types (1 =
  batches mixed within every type).
* **ARI / NMI** of the Leiden clusters (default resolution) against the cell types.
"""

from __future__ import annotations

import logging
import math

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from mscflow.cluster import _kernels as K
from mscflow.cluster.core import cache_umap_kernels, leiden, leiden_key, neighbours
from mscflow.cluster.integration import batch_labels
from mscflow.job import timed
from mscflow.plotting import OKABE_ITO, cell_type_palette, set_style
from mscflow.vocab import UNASSIGNED

log = logging.getLogger(__name__)

METRIC_COLUMNS = [
    "stage", "representation", "method", "batch_key", "lisi_neighbours", "n_cells",
    "n_batches", "n_cell_types", "ilisi", "ilisi_median", "batch_asw", "clisi",
    "celltype_asw", "ari", "nmi", "note",
]


# ------------------------------------------------------------------------------ LISI


def knn_excluding_self(x: np.ndarray, k: int, n_jobs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean ``k`` nearest neighbours of every row, itself excluded."""
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(x, dtype=np.float64)
    k = min(k, len(x) - 1)
    dist, idx = NearestNeighbors(n_neighbors=k + 1, algorithm="brute",
                                 n_jobs=n_jobs).fit(x).kneighbors(x)
    self_first = idx[:, 0] == np.arange(len(x))
    # with exact duplicates the cell itself may come second: drop it wherever it is
    if not self_first.all():
        keep = idx != np.arange(len(x))[:, None]
        keep[keep.sum(axis=1) > k, -1] = False
        return dist[keep].reshape(len(x), k), idx[keep].reshape(len(x), k)
    return dist[:, 1:], idx[:, 1:]


def graph_knn(graph: sparse.spmatrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest cells of every cell by shortest path on a weighted graph.

    ``graph`` holds edge lengths (e.g. Euclidean distances of a kNN graph); it is made
    undirected. Cells with fewer than ``k`` reachable cells get index -1 and distance inf
    in the free places.
    """
    g = sparse.csr_matrix(graph, dtype=np.float64)
    g = g.maximum(g.T).tocsr()
    g.sort_indices()
    return K.graph_knn(g.indptr.astype(np.int64), g.indices.astype(np.int64), g.data, k)


def lisi(dist: np.ndarray, idx: np.ndarray, labels: np.ndarray, perplexity: float,
         tol: float = 1e-5, max_tries: int = 50) -> np.ndarray:
    """Per-cell LISI from neighbour distances and indices (rows = cells).

    Vectorised over cells, step for step the algorithm of ``harmonypy.compute_lisi``: a
    binary search of the Gaussian precision until the entropy of the neighbour weights is
    ``log(perplexity)``, then ``1 / sum over labels of (weight of the label)^2``. A cell
    whose weights vanish gets 0, as there. Missing neighbours (index -1) weigh nothing.
    """
    codes, cats = pd.factorize(pd.Series(np.asarray(labels)), sort=True)
    n, k = dist.shape
    finite = np.isfinite(dist) & (idx >= 0)
    d = np.where(finite, dist, 0.0)
    neighbour_codes = np.where(finite, codes[np.clip(idx, 0, None)], 0)
    log_u = math.log(perplexity)
    beta, beta_min, beta_max = np.ones(n), np.full(n, -np.inf), np.full(n, np.inf)
    weights, entropy = np.zeros((n, k)), np.zeros(n)
    active = np.arange(n)
    for _ in range(max_tries + 1):
        p = np.where(finite[active], np.exp(-d[active] * beta[active, None]), 0.0)
        total = p.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            h = np.where(total > 0, np.log(total) + beta[active] * (d[active] * p).sum(axis=1)
                         / total, 0.0)
            weights[active] = np.where(total[:, None] > 0, p / total[:, None], 0.0)
        entropy[active] = h
        diff = h - log_u
        going = np.abs(diff) >= tol
        active, diff = active[going], diff[going]
        if not len(active) or _ == max_tries:
            break
        up = diff > 0
        b = beta[active]
        beta_min[active[up]] = b[up]
        beta_max[active[~up]] = b[~up]
        hi, lo = beta_max[active], beta_min[active]
        beta[active] = np.where(up, np.where(np.isinf(hi), b * 2, (b + hi) / 2),
                                np.where(np.isinf(lo), b / 2, (b + lo) / 2))
    per_label = np.zeros((n, len(cats)))
    np.add.at(per_label, (np.repeat(np.arange(n), k), neighbour_codes.ravel()),
              weights.ravel())
    simpson = (per_label ** 2).sum(axis=1)
    with np.errstate(divide="ignore"):
        return np.where((entropy != 0) & (simpson > 0), 1.0 / simpson, 0.0)


def ilisi_scaled(values: np.ndarray, n_batches: int) -> float:
    """scIB's scaled iLISI: ``(median - 1) / (batches - 1)``, 0 (separate) .. 1 (mixed)."""
    return float((np.nanmedian(values) - 1) / (n_batches - 1)) if n_batches > 1 else math.nan


def clisi_scaled(values: np.ndarray, n_types: int) -> float:
    """scIB's scaled cLISI: ``(types - median) / (types - 1)``, 1 = one type per neighbourhood."""
    return float((n_types - np.nanmedian(values)) / (n_types - 1)) if n_types > 1 else math.nan


# ------------------------------------------------------------------------------- ASW


def celltype_asw(x: np.ndarray, cell_types: np.ndarray) -> float:
    """``(silhouette of the cell types + 1) / 2`` (scIB's label ASW)."""
    from sklearn.metrics import silhouette_score

    n_types = pd.Series(cell_types).nunique()
    if not 2 <= n_types <= len(cell_types) - 1:
        return math.nan
    return float((silhouette_score(x, cell_types) + 1) / 2)


def batch_asw(x: np.ndarray, batches: np.ndarray, cell_types: np.ndarray) -> float:
    """scIB's batch ASW: per cell type ``mean(1 - |silhouette of the batches|)``, averaged
    over the types that hold more than one batch."""
    from sklearn.metrics import silhouette_samples

    batches, cell_types = np.asarray(batches), np.asarray(cell_types)
    per_type = []
    for cell_type in pd.unique(cell_types):
        mask = cell_types == cell_type
        n_batches = pd.Series(batches[mask]).nunique()
        if n_batches < 2 or n_batches >= mask.sum():
            continue
        per_type.append(np.mean(1 - np.abs(silhouette_samples(x[mask], batches[mask]))))
    return float(np.mean(per_type)) if per_type else math.nan


# --------------------------------------------------------------------------- one space


def space_metrics(*, dist: np.ndarray, idx: np.ndarray, x: np.ndarray | None,
                  batches: np.ndarray, cell_types: np.ndarray, clusters: np.ndarray,
                  assigned: np.ndarray, subset: np.ndarray, perplexity: float) -> dict:
    """Every metric of one representation.

    ``dist``/``idx``: each cell's neighbours (embedding kNN or graph shortest paths);
    ``x``: the embedding for the silhouettes (None for a graph: no ASW); ``assigned``:
    cells with a cell type (cell-type metrics use only these); ``subset``: the cells of
    the silhouettes.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    n_batches = pd.Series(batches).nunique()
    typed = cell_types[assigned]
    n_types = pd.Series(typed).nunique()
    ilisi = lisi(dist, idx, batches, perplexity)
    # cLISI among the typed cells: neighbours without a type are left out
    typed_idx = np.where(assigned[np.clip(idx, 0, None)] & (idx >= 0), idx, -1)[assigned]
    clisi = lisi(dist[assigned], typed_idx, cell_types, perplexity)
    out = {"n_cells": len(batches), "n_batches": n_batches, "n_cell_types": n_types,
           "ilisi": ilisi_scaled(ilisi, n_batches), "ilisi_median": float(np.median(ilisi)),
           "clisi": clisi_scaled(clisi, n_types),
           "ari": float(adjusted_rand_score(typed, clusters[assigned])),
           "nmi": float(normalized_mutual_info_score(typed, clusters[assigned])),
           "batch_asw": math.nan, "celltype_asw": math.nan}
    if x is not None:
        sub = subset[assigned[subset]]
        out["celltype_asw"] = celltype_asw(x[sub], cell_types[sub])
        out["batch_asw"] = (batch_asw(x[sub], batches[sub], cell_types[sub])
                            if n_batches > 1 else math.nan)
    if n_batches < 2:
        out["batch_asw"] = math.nan
    return out


def silhouette_subset(n_obs: int, max_cells: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``max_cells`` cells, drawn with ``seed``."""
    if n_obs <= max_cells:
        return np.arange(n_obs)
    return np.sort(np.random.default_rng(seed).choice(n_obs, size=max_cells, replace=False))


def single_type_batches(batches: pd.Series, cell_types: pd.Series) -> list[str]:
    """Batches whose typed cells are all of one cell type (their mixing cannot be judged
    against the other batches); each is logged as a warning."""
    frame = pd.DataFrame({"batch": batches.astype(str).to_numpy(),
                          "cell_type": cell_types.astype(str).to_numpy()})
    n_types = frame.groupby("batch")["cell_type"].nunique()
    found = sorted(n_types.index[n_types == 1])
    for batch in found:
        only = frame.loc[frame["batch"] == batch, "cell_type"].iloc[0]
        log.warning("batch '%s' holds only cell type '%s': integration may pull its cells "
                    "onto other batches' cell types, and its mixing cannot be judged; check "
                    "the batch column and the annotation", batch, only)
    return found


def uncorrected_graph(adata: ad.AnnData, settings) -> ad.AnnData:
    """The graph, Leiden clusters (default resolution) and UMAP the cluster job would have
    built without integration: same PCA, settings and seed (``settings``: ClusterSettings)."""
    import scanpy as sc

    cache_umap_kernels()  # umap-learn's kernels from the on-disk cache, not compiled anew
    plain = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names),
                       obsm={"X_pca": np.asarray(adata.obsm["X_pca"])})
    neighbours(plain, settings, plain.obsm["X_pca"].shape[1])
    leiden(plain, settings, settings.default_resolution)
    plain.obs["leiden"] = plain.obs.pop(leiden_key(settings.default_resolution))
    sc.tl.umap(plain, min_dist=settings.umap_min_dist, random_state=settings.random_state,
               maxiter=settings.umap_epochs)
    return plain


# ----------------------------------------------------------------------------- the stage


def integration_evidence(adata: ad.AnnData, settings, *, cell_type_key: str = "cell_type"
                         ) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Metrics of the clustering's embedding before and after integration.

    ``adata``: the annotated cells (``X_pca``, the integrated embedding or graph,
    ``uns["integration"]`` from the cluster job, Leiden clusters and ``cell_type``);
    ``settings``: the run's ClusterSettings. "Before" is rebuilt from ``X_pca`` exactly as
    the cluster job would have without integration (:func:`uncorrected_graph`). Without an
    integration (method none, one batch) there is one stage, ``uncorrected``.

    Returns the metrics table (:data:`METRIC_COLUMNS`) and, per stage, what the figure
    draws: ``{"umap", "batch", "cell_type", "title"}``.
    """

    info = dict(adata.uns["integration"])
    metrics = settings.integration.metrics
    batches = batch_labels(adata.obs, settings.batch_key).astype(str).to_numpy()
    types = adata.obs[cell_type_key].astype(str).to_numpy()
    assigned = types != UNASSIGNED
    flagged = single_type_batches(pd.Series(batches[assigned]), pd.Series(types[assigned]))
    subset = silhouette_subset(adata.n_obs, metrics.max_cells, settings.random_state)
    k = int(3 * metrics.perplexity)
    on_graph = bool(info["graph_built"])
    after = {"clusters": adata.obs[leiden_key(settings.default_resolution)].astype(str),
             "umap": np.asarray(adata.obsm["X_umap"]), "graph": adata.obsp["distances"],
             "x": None if on_graph else np.asarray(adata.obsm[info["use_rep"]]),
             "rep": f"bbknn graph on {info['use_rep']}" if on_graph else info["use_rep"]}
    if info["method"] == "none":
        stages = {"uncorrected": after}
    else:
        with timed("uncorrected graph, Leiden and UMAP"):
            plain = uncorrected_graph(adata, settings)
        stages = {"before": {"clusters": plain.obs["leiden"].astype(str),
                             "umap": plain.obsm["X_umap"], "graph": plain.obsp["distances"],
                             "x": None if on_graph else np.asarray(adata.obsm["X_pca"]),
                             "rep": "kNN graph on X_pca" if on_graph else "X_pca"},
                  "after": after}
    notes = []
    if info["note"]:
        notes.append(info["note"])
    if flagged:
        notes.append(f"batch(es) {flagged} hold one cell type only")
    if (~assigned).any():
        notes.append(f"{int((~assigned).sum())} unassigned cells left out of the cell-type "
                     "metrics")
    if on_graph:
        notes.append("BBKNN corrects the graph: LISI on graph paths, no ASW")
    rows, drawn = [], {}
    for stage, space in stages.items():
        with timed(f"metrics {stage}"):
            if on_graph:
                dist, idx = graph_knn(space["graph"], k)
            else:
                dist, idx = knn_excluding_self(space["x"], k, n_jobs=settings.n_jobs)
            values = space_metrics(dist=dist, idx=idx, x=space["x"], batches=batches,
                                   cell_types=types, clusters=space["clusters"].to_numpy(),
                                   assigned=assigned, subset=subset,
                                   perplexity=metrics.perplexity)
        rows.append({"stage": stage, "representation": space["rep"],
                     "method": info["method"] if stage != "before" else "none",
                     "batch_key": settings.batch_key,
                     "lisi_neighbours": f"{k} nearest by {'graph path' if on_graph else 'kNN'}",
                     **values, "note": "; ".join(notes)})
        log.info("%s (%s): iLISI %.3f, batch ASW %.3f, cLISI %.3f, cell-type ASW %.3f, "
                 "ARI %.3f, NMI %.3f", stage, space["rep"], values["ilisi"],
                 values["batch_asw"], values["clisi"], values["celltype_asw"], values["ari"],
                 values["nmi"])
        drawn[stage] = {"umap": space["umap"], "batch": batches, "cell_type": types,
                        "title": f"{stage} ({space['rep']})"}
    return pd.DataFrame(rows, columns=METRIC_COLUMNS), drawn


def before_after_figure(drawn: dict[str, dict], batch_key: str):
    """UMAPs of each stage (rows) coloured by batch and by cell type (columns)."""
    import matplotlib.pyplot as plt

    set_style()
    fig, axes = plt.subplots(len(drawn), 2, figsize=(12, 5.2 * len(drawn)), squeeze=False)
    first = next(iter(drawn.values()))
    batch_names = sorted(set(first["batch"]))
    spare = OKABE_ITO + list(plt.get_cmap("tab20").colors)
    palettes = {"batch": dict(zip(batch_names, spare * (len(batch_names) // len(spare) + 1),
                                  strict=False)),
                "cell_type": cell_type_palette(first["cell_type"])}
    order = np.random.default_rng(0).permutation(len(first["batch"]))
    for row, info in zip(axes, drawn.values(), strict=True):
        for ax, key in zip(row, ("batch", "cell_type"), strict=True):
            labels = np.asarray(info[key])[order]
            xy = np.asarray(info["umap"])[order]
            colours = pd.Series(labels).map(palettes[key]).to_numpy()
            ax.scatter(xy[:, 0], xy[:, 1], c=list(colours), s=4, linewidths=0,
                       rasterized=True)
            label = batch_key if key == "batch" else "cell type"
            ax.set_title(f"{info['title']}: {label}")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel("UMAP1")
            ax.set_ylabel("UMAP2")
            handles = [plt.Line2D([], [], marker="o", linestyle="", color=c, label=n)
                       for n, c in palettes[key].items() if n in set(labels)]
            ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1, 0.5),
                      markerscale=1.2, title=label)
    fig.tight_layout()
    return fig
