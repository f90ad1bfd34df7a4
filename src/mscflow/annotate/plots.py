"""Figures of the annotation stage: marker sets by label."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from mscflow.plotting import cell_type_rank, set_style


def marker_set_dotplot(dot: pd.DataFrame) -> plt.Figure:
    """Dot plot of marker sets (columns) by label (rows): colour mean log expression of the
    set's genes, size the mean fraction of cells expressing them."""
    set_style()
    agg = dot.groupby(["group", "set"], as_index=False)[
        ["mean_expression", "fraction_expressing"]].mean()
    groups = sorted(agg["group"].unique(), key=cell_type_rank)
    sets = sorted(agg["set"].unique(), key=cell_type_rank)
    fig, ax = plt.subplots(figsize=(0.55 * len(sets) + 3, 0.45 * len(groups) + 1.5))
    x = agg["set"].map({s: i for i, s in enumerate(sets)})
    y = agg["group"].map({g: i for i, g in enumerate(groups)})
    points = ax.scatter(x, y, s=20 + 280 * agg["fraction_expressing"],
                        c=agg["mean_expression"], cmap="viridis", edgecolors="none")
    ax.set_xticks(range(len(sets)), sets, rotation=70, ha="right")
    ax.set_yticks(range(len(groups)), groups)
    ax.set_xlabel("marker set")
    ax.set_ylabel("label")
    fig.colorbar(points, ax=ax, label="mean log1p expression (normalised counts)")
    for frac in (0.25, 0.5, 1.0):
        ax.scatter([], [], s=20 + 280 * frac, c="grey", label=f"{frac:.0%}")
    ax.legend(title="cells expressing", bbox_to_anchor=(1.25, 1), loc="upper left")
    return fig
