"""Doublet-driven clusters: clusters that the called doublets land in far more than others.

Called doublets are removed at QC, so they have no cluster of their own. Each keeps, in the
per-cell QC metrics, the nearest cell of its sample that was not called
(``doublet_neighbour``, in the doublet method's embedding); a doublet lands in that cell's
cluster. A cluster made of doublets the caller missed attracts the doublets it did call (they
lie next to their uncalled kind), so there the called doublets are a large share of all the
cells landing in it: ``doublet_share = n_doublets / (n_cells + n_doublets)``. A cluster
above ``qc.doublet_cluster_share`` is flagged ``doublet_driven``; its cells are probably
doublets of the two populations its markers mix, not a population of their own.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mscflow.plotting import BASE_FONT_SIZE, set_style

CLUSTER_DOUBLET_COLUMNS = [
    "cluster", "tissue", "label", "n_cells", "n_doublets", "doublet_share",
    "mean_doublet_score", "doublet_driven",
]  # fmt: skip


def doublet_cluster_table(cells: pd.DataFrame, clusters: pd.DataFrame, metrics: pd.DataFrame,
                          max_share: float) -> pd.DataFrame:
    """Per cluster and tissue: kept cells, called doublets landing there, their share, the
    mean doublet score of the kept cells, and the flag ``doublet_driven`` (share above
    ``max_share``).

    ``cells``: the annotation's per-cell table (index or column ``cell``; ``cluster``,
    ``tissue``); ``clusters``: its cluster table (``cluster``, ``tissue``, ``label``);
    ``metrics``: the QC metrics of every sample (``cell``, ``predicted_doublet``,
    ``doublet_neighbour``, ``doublet_score``). Doublets whose neighbour is not among the
    annotated cells (e.g. its sample was dropped) are left out.
    """
    cells = cells.reset_index() if "cell" not in cells.columns else cells
    where = cells.set_index("cell")[["cluster", "tissue"]].astype(str)
    metrics = metrics.set_index("cell")
    called = metrics["predicted_doublet"].astype(bool)
    neighbours = metrics.loc[called, "doublet_neighbour"].fillna("").astype(str)
    landed = where.reindex(neighbours.to_numpy()).dropna()
    n_doublets = landed.groupby(["cluster", "tissue"]).size().rename("n_doublets")
    scores = metrics["doublet_score"].reindex(where.index)
    kept = where.assign(doublet_score=scores.to_numpy())
    per_cluster = kept.groupby(["cluster", "tissue"]).agg(
        n_cells=("doublet_score", "size"), mean_doublet_score=("doublet_score", "mean"))
    table = per_cluster.join(n_doublets).fillna({"n_doublets": 0}).reset_index()
    table["n_doublets"] = table["n_doublets"].astype(int)
    table["doublet_share"] = table["n_doublets"] / (table["n_cells"] + table["n_doublets"])
    table["doublet_driven"] = table["doublet_share"] > max_share
    labels = clusters.astype({"cluster": str, "tissue": str}).set_index(
        ["cluster", "tissue"])["label"]
    table["label"] = labels.reindex(pd.MultiIndex.from_frame(table[["cluster", "tissue"]])
                                    ).to_numpy()
    table = table.sort_values(["doublet_share", "tissue", "cluster"],
                              ascending=[False, True, True], kind="stable")
    return table[CLUSTER_DOUBLET_COLUMNS].reset_index(drop=True)


def doublet_cluster_figure(table: pd.DataFrame, max_share: float) -> plt.Figure:
    """Share of called doublets per cluster (highest first), the flag line, flagged bars in
    orange."""
    set_style()
    names = [f"{c} {t} ({lab})".replace(" ()", "")
             for c, t, lab in zip(table["cluster"], table["tissue"], table["label"].fillna(""),
                                  strict=True)]
    fig, ax = plt.subplots(figsize=(6.5, max(2.5, 0.28 * len(table) + 1.2)))
    colours = np.where(table["doublet_driven"], "#D55E00", "#7F7F7F")
    y = np.arange(len(table))
    ax.barh(y, 100 * table["doublet_share"], color=colours)
    ax.axvline(100 * max_share, color="#0072B2", linestyle="--", linewidth=1.2)
    ax.set_yticks(y, names, fontsize=BASE_FONT_SIZE - 2)
    ax.invert_yaxis()
    ax.set_xlabel("called doublets landing in the cluster (% of its cells + doublets)")
    n_flagged = int(table["doublet_driven"].sum())
    ax.set_title(f"doublet-driven clusters: {n_flagged} above {100 * max_share:.0f} %")
    fig.tight_layout()
    return fig
