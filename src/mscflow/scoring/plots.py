"""Figures of the scoring stage: mean scores by cell type and condition, score violins."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from mscflow.plotting import cell_type_rank, condition_palette, rotate_xticklabels, set_style


def cell_type_means(mean_scores: pd.DataFrame) -> pd.DataFrame:
    """Mean score per condition, tissue, cell type and gene set, samples as replicates.

    ``mean_scores`` is the long table of :func:`mscflow.report.summary.mean_scores` (one row per
    cluster, cell type, sample and set with ``n_cells`` and ``mean_score``). Clusters of a
    cell type are pooled within each sample (weighted by cells), then samples are averaged
    with equal weight. ``n_samples`` counts the samples holding the cell type.
    """
    keys = ["condition", "tissue", "cell_type", "gene_set"]
    per_sample = (
        mean_scores.assign(weighted=mean_scores["mean_score"] * mean_scores["n_cells"])
        .groupby([*keys, "sample"], observed=True)[["weighted", "n_cells"]].sum()
    )
    per_sample["mean_score"] = per_sample["weighted"] / per_sample["n_cells"]
    out = per_sample.groupby(keys, observed=True).agg(
        mean_score=("mean_score", "mean"), n_samples=("mean_score", "size"),
        n_cells=("n_cells", "sum"))
    return out.reset_index()


def score_limit(mean_scores: pd.DataFrame) -> float:
    """Symmetric colour limit shared by every condition's heatmap (98th pct of |mean|)."""
    values = cell_type_means(mean_scores)["mean_score"].abs().dropna()
    return float(np.quantile(values, 0.98)) if len(values) and values.max() > 0 else 1.0


def mean_score_heatmap(mean_scores: pd.DataFrame, condition: str, *,
                       limit: float | None = None) -> plt.Figure:
    """Heatmap of mean scores (cell type x gene set) for one condition.

    Means come from :func:`cell_type_means` (samples as replicates); rows are cell types (with
    their tissue when the run holds several), columns gene sets in the order of the table.
    The colour scale is centred on 0 and, by default, shared by all conditions of the table
    (:func:`score_limit`) so that heatmaps of different conditions compare directly.
    """
    set_style()
    if condition not in set(mean_scores["condition"].astype(str)):
        raise ValueError(f"condition {condition!r} not in the mean score table "
                         f"({sorted(mean_scores['condition'].astype(str).unique())})")
    means = cell_type_means(mean_scores)
    means = means[means["condition"].astype(str) == condition]
    several_tissues = mean_scores["tissue"].nunique() > 1
    means["row"] = (means["cell_type"].astype(str) + " (" + means["tissue"].astype(str) + ")"
                    if several_tissues else means["cell_type"].astype(str))
    rows = (means.sort_values(["cell_type", "tissue"],
                              key=lambda s: s.map(cell_type_rank) if s.name == "cell_type"
                              else s)["row"].drop_duplicates().tolist())
    sets = list(dict.fromkeys(mean_scores["gene_set"]))
    table = means.pivot(index="row", columns="gene_set", values="mean_score").reindex(
        index=rows, columns=sets)
    limit = score_limit(mean_scores) if limit is None else limit
    fig, ax = plt.subplots(figsize=(0.42 * len(sets) + 4, 0.36 * len(rows) + 2.6))
    sns.heatmap(table, cmap="RdBu_r", vmin=-limit, vmax=limit, center=0, ax=ax,
                linewidths=0.4, linecolor="white",
                cbar_kws={"label": "mean score (a.u.), mean of sample means", "shrink": 0.6})
    ax.set_title(f"Mean gene-set score per cell type: {condition}")
    ax.set_xlabel("gene set")
    ax.set_ylabel("cell type (tissue)" if several_tissues else "cell type")
    rotate_xticklabels(ax, 60)
    return fig


def score_violins(obs: pd.DataFrame, sets: Sequence[str]) -> plt.Figure:
    """Violins of scores by cell type, split by condition, one row per gene set."""
    set_style()
    cell_types = sorted(obs["cell_type"].astype(str).unique(), key=cell_type_rank)
    palette = condition_palette(obs["condition"].astype(str).unique())
    fig, axes = plt.subplots(len(sets), 1, figsize=(max(8, 0.8 * len(cell_types)),
                                                    2.6 * len(sets)), sharex=True,
                             squeeze=False)
    data = obs.assign(cell_type=obs["cell_type"].astype(str),
                      condition=obs["condition"].astype(str))
    for ax, name in zip(axes[:, 0], sets, strict=True):
        sns.violinplot(data=data, x="cell_type", y=f"score_{name}", hue="condition",
                       order=cell_types, hue_order=list(palette), palette=palette, ax=ax,
                       inner=None, cut=0, density_norm="width", linewidth=0.4)
        ax.set_title(name, loc="left")
        ax.set_ylabel("score (a.u.)")
        ax.set_xlabel("")
        if ax.legend_ is not None and ax is not axes[0, 0]:
            ax.legend_.remove()
    axes[0, 0].legend(title="condition", bbox_to_anchor=(1.01, 1), loc="upper left")
    axes[-1, 0].set_xlabel("cell type")
    rotate_xticklabels(axes[-1, 0])
    fig.tight_layout()
    return fig
