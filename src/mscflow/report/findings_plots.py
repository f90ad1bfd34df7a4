"""The findings page's figure: score shifts per cell type and programme as heat maps."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mscflow.contrast.stats import STATUS_TESTED
from mscflow.plotting import set_style
from mscflow.report.tables import METRIC_LABELS
from mscflow.vocab import CELL_TYPE_ORDER

__all__ = ["figure_png", "overview_heatmap"]


def overview_heatmap(shifts: pd.DataFrame, *, metric: str = "mean"):
    """Score shifts as heat maps of cell type x programme, one panel per contrast
    (its tissue), one colour scale; a dot marks a call, grey an untested pair."""
    import matplotlib.pyplot as plt

    set_style()
    data = shifts[shifts["metric"] == metric]
    if data.empty:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "no score shifts to show (no contrasts or no tested pairs)",
                ha="center", va="center")
        return fig
    contrasts = list(dict.fromkeys(data["contrast"]))
    sets = sorted(data["gene_set"].unique())
    rank = {c: i for i, c in enumerate(CELL_TYPE_ORDER)}
    panels = []
    for c in contrasts:
        part = data[data["contrast"] == c]
        types = sorted(part["cell_type"].unique(), key=lambda t: (rank.get(t, len(rank)), t))
        tested = part[part["status"] == STATUS_TESTED]
        effect = tested.pivot(index="cell_type", columns="gene_set", values="effect")
        sig = tested.pivot(index="cell_type", columns="gene_set", values="significant")
        panels.append((part.iloc[0], effect.reindex(index=types, columns=sets),
                       sig.reindex(index=types, columns=sets).eq(True)))
    finite = np.abs(data.loc[data["status"] == STATUS_TESTED, "effect"].to_numpy(float))
    finite = finite[np.isfinite(finite)]
    limit = float(np.quantile(finite, 0.99)) if finite.size else 1.0
    limit = limit if limit > 0 else 1.0
    heights = [max(len(p[1]), 1) for p in panels]
    fig, axes = plt.subplots(len(panels), 1, squeeze=False, figsize=(
        2.5 + 0.32 * len(sets), 1.2 + 0.3 * sum(heights) + 0.9 * len(panels)),
        gridspec_kw={"height_ratios": heights})
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#e2e8f0")
    mesh = None
    for ax, (row, effect, sig) in zip(axes[:, 0], panels, strict=True):
        values = np.ma.masked_invalid(effect.to_numpy(float))
        mesh = ax.pcolormesh(values, cmap=cmap, vmin=-limit, vmax=limit, edgecolors="white",
                             linewidth=0.5)
        ys, xs = np.nonzero(sig.to_numpy())
        ax.scatter(xs + 0.5, ys + 0.5, s=12, c="black", marker="o", linewidths=0)
        ax.set_yticks(np.arange(len(effect)) + 0.5, effect.index)
        ax.set_xticks(np.arange(len(sets)) + 0.5, sets if ax is axes[-1, 0] else [],
                      rotation=90)
        ax.invert_yaxis()
        ax.set_title(f"{row['tissue']}: {row['condition']} vs {row['reference']}", loc="left",
                     fontsize=10)
        ax.tick_params(length=0)
    cbar = fig.colorbar(mesh, ax=axes[:, 0].tolist(), shrink=0.6, pad=0.02)
    cbar.set_label(f"{METRIC_LABELS.get(metric, metric)}: condition - reference")
    return fig


def figure_png(fig) -> bytes:
    """The figure as PNG bytes, saved as :func:`mscflow.plotting.save` saves it."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()
