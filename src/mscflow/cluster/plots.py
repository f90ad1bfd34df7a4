"""Figures of the clustering stage: UMAP panels and the comparison of resolutions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc
import seaborn as sns

from mscflow.plotting import BASE_FONT_SIZE, cell_type_palette, condition_palette, set_style


def umap_panels(adata: ad.AnnData, keys: Sequence[str], *, titles: Mapping[str, str] | None = None,
                ncols: int = 2) -> plt.Figure:
    """UMAP coloured by each obs key, with the fixed palettes for conditions and cell types.

    Score columns (``score_<set>``) are titled ``<set> score`` unless ``titles`` says otherwise.
    Cells are drawn in a fixed random order so that no sample or condition hides the others.
    """
    set_style()
    if all(k in adata.obs for k in keys):
        order = np.random.default_rng(0).permutation(adata.n_obs)
        adata = ad.AnnData(obs=adata.obs.iloc[order],
                           obsm={"X_umap": np.asarray(adata.obsm["X_umap"])[order]},
                           uns={k: v for k, v in adata.uns.items() if k.endswith("_colors")})
    for key in keys:
        if key == "condition":
            pal = condition_palette(adata.obs[key].cat.categories)
            adata.uns["condition_colors"] = [pal[c] for c in adata.obs[key].cat.categories]
        elif key == "cell_type":
            pal = cell_type_palette(adata.obs[key].cat.categories)
            adata.uns["cell_type_colors"] = [pal[c] for c in adata.obs[key].cat.categories]
    default = {k: f"{k.removeprefix('score_')} score" if k.startswith("score_") else
               k.replace("_", " ") for k in keys}
    fig = sc.pl.umap(adata, color=list(keys), ncols=ncols, show=False, return_fig=True,
                     title=[{**default, **(titles or {})}[k] for k in keys], size=6,
                     wspace=0.45)
    return fig


def resolution_comparison(agreement: pd.DataFrame) -> plt.Figure:
    """Clusters per Leiden resolution (bars) and adjusted Rand index between resolutions.

    ``agreement`` is the table of :func:`mscflow.cluster.core.resolution_agreement` with columns
    clustering_a, clustering_b, n_clusters_a, n_clusters_b, adjusted_rand_index.
    """
    set_style()
    keys = list(dict.fromkeys([*agreement["clustering_a"], *agreement["clustering_b"]]))
    keys = sorted(keys, key=_resolution_of)
    counts = (agreement.drop_duplicates("clustering_a")
              .set_index("clustering_a")["n_clusters_a"].reindex(keys))
    ari = agreement.pivot_table(index="clustering_a", columns="clustering_b",
                                values="adjusted_rand_index", aggfunc="mean")
    ari = ari.reindex(index=keys, columns=keys)
    labels = [f"{_resolution_of(k):g}" for k in keys]
    fig, (ax_n, ax_ari) = plt.subplots(
        1, 2, figsize=(6 + 1.2 * len(keys), 3.8 + 0.3 * len(keys)),
        gridspec_kw={"width_ratios": [1, 1.3]})
    ax_n.bar(labels, counts.to_numpy(), color="#0072B2", width=0.6)
    for x, n in enumerate(counts.to_numpy()):
        ax_n.annotate(f"{int(n)}", (x, n), xytext=(0, 3), textcoords="offset points",
                      ha="center", va="bottom", fontsize=BASE_FONT_SIZE - 1)
    ax_n.set_ylim(0, 1.15 * max(counts.max(), 1))
    ax_n.grid(False)
    ax_n.set_xlabel("Leiden resolution")
    ax_n.set_ylabel("clusters (number)")
    ax_n.set_title("Clusters per resolution")
    sns.heatmap(ari.set_axis(labels, axis=0).set_axis(labels, axis=1), vmin=0, vmax=1,
                cmap="viridis", annot=True, fmt=".2f", square=True, ax=ax_ari,
                cbar_kws={"label": "adjusted Rand index (1 = identical)"})
    ax_ari.set_xlabel("Leiden resolution")
    ax_ari.set_ylabel("Leiden resolution")
    ax_ari.set_title("Agreement (ARI)")
    fig.tight_layout()
    return fig


def _resolution_of(key: str) -> float:
    """Resolution of a clustering key ``leiden_<resolution>`` (inf when not numeric)."""
    try:
        return float(str(key).rsplit("_", 1)[-1])
    except ValueError:
        return float("inf")
