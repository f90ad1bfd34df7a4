"""Plots of the focus ligand-receptor axes of one contrast (from interactions.parquet).

* :func:`focus_dotplot`: focus interactions (rows) x sender -> receiver (columns), one panel
  per condition: dot area = ``lr_props`` (share of cells behind the weaker side), colour =
  ``lr_means``, both the mean over the condition's samples; a black ring marks a
  significant change of ``lr_means`` (BH FDR of the focus family).
* :func:`focus_heatmap`: per focus interaction, the ``lr_means`` effect (condition -
  reference) as a sender x receiver heat map; grey = not tested, ``*`` = significant.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from mscflow.communication.contrast import FAMILY_FOCUS
from mscflow.contrast import STATUS_TESTED
from mscflow.plotting import message_figure, set_style

__all__ = ["focus_dotplot", "focus_heatmap", "focus_units"]

ARROW = "\u2192"
SIZE_SCALE = 260.0  # marker area (points^2) of lr_props = 1


def focus_units(interactions: pd.DataFrame, contrast: str) -> pd.DataFrame:
    """One row per focus unit of ``contrast``: group means of ``lr_means`` and
    ``lr_props``, the ``lr_means`` effect, padj, significance and status."""
    f = interactions[(interactions["contrast"] == contrast)
                     & (interactions["fdr_family"] == FAMILY_FOCUS)]
    keys = ["focus_axis", "sender", "receiver", "ligand", "receptor"]
    means = f[f["metric"] == "lr_means"].set_index(keys)
    props = f[f["metric"] == "lr_props"].set_index(keys)
    out = pd.DataFrame({
        "means_reference": means["mean_reference"], "means_condition": means["mean_condition"],
        "effect": means["effect"], "padj": means["padj"],
        "significant": means["significant"].astype(bool), "status": means["status"],
    })
    out["props_reference"] = props["mean_reference"].reindex(out.index)
    out["props_condition"] = props["mean_condition"].reindex(out.index)
    out = out.reset_index()
    out["pair"] = out["ligand"] + f" {ARROW} " + out["receptor"]
    out["cells"] = out["sender"] + f" {ARROW} " + out["receiver"]
    return _in_axis_order(out)


def _in_axis_order(units: pd.DataFrame) -> pd.DataFrame:
    """Units sorted by focus axis (table order), then ligand and receptor."""
    axis_rank = {a: i for i, a in enumerate(pd.unique(units["focus_axis"]))}
    return units.assign(_a=units["focus_axis"].map(axis_rank)).sort_values(
        ["_a", "ligand", "receptor", "sender", "receiver"], kind="mergesort").drop(columns="_a")


def _pair_labels(units: pd.DataFrame) -> list[str]:
    """Focus pairs in the order of ``units``, labelled ``L -> R (axis)``."""
    first = units.drop_duplicates("pair")
    return [f"{p} ({a})" for p, a in zip(first["pair"], first["focus_axis"], strict=True)]


def focus_dotplot(interactions: pd.DataFrame, contrast: str, max_pairs: int = 30) -> Figure:
    """Dot plot of the focus interactions of ``contrast`` per condition (reference left,
    condition right) for the ``max_pairs`` sender -> receiver pairs with the strongest
    focus interaction among those tested."""
    set_style()
    units = focus_units(interactions, contrast)
    if units.empty:
        return message_figure(f"no focus interaction in contrast {contrast}",
                              title="focus interactions")
    tested = units[units["status"] == STATUS_TESTED]
    pool = tested if not tested.empty else units
    strength = pool.groupby("cells")[["means_reference", "means_condition"]].max().max(axis=1)
    cells = strength.sort_values(ascending=False, kind="mergesort").index[:max_pairs].tolist()
    cells = sorted(cells)
    units = units[units["cells"].isin(cells)]
    pairs = units.drop_duplicates("pair")["pair"].tolist()
    labels = _pair_labels(units)
    row = interactions[interactions["contrast"] == contrast].iloc[0]
    width = max(6.0, 2 * (1.6 + 0.32 * len(cells)))
    height = max(3.0, 1.8 + 0.34 * len(pairs))
    fig, axes = plt.subplots(1, 2, figsize=(width, height), sharey=True)
    vmax = float(np.nanmax(units[["means_reference", "means_condition"]].to_numpy()))
    vmax = vmax if np.isfinite(vmax) and vmax > 0 else 1.0
    x = units["cells"].map({c: i for i, c in enumerate(cells)})
    y = units["pair"].map({p: i for i, p in enumerate(pairs)})
    scatter = None
    for ax, group, title in ((axes[0], "reference", row["reference"]),
                             (axes[1], "condition", row["condition"])):
        size = units[f"props_{group}"].fillna(0).clip(0, 1) * SIZE_SCALE
        edge = np.where((group == "condition") & units["significant"], "black", "none")
        scatter = ax.scatter(x, y, s=size, c=units[f"means_{group}"], cmap="viridis",
                             vmin=0, vmax=vmax, edgecolors=edge, linewidths=1.2)
        ax.set_title(str(title))
        ax.set_xticks(range(len(cells)), cells)
        plt.setp(ax.get_xticklabels(), rotation=60, ha="right", rotation_mode="anchor")
        ax.set_xlim(-0.6, len(cells) - 0.4)
        ax.set_ylim(len(pairs) - 0.5, -0.5)
        ax.grid(True, color="#eeeeee", zorder=0)
    axes[0].set_yticks(range(len(pairs)), labels)
    fig.colorbar(scatter, ax=axes, shrink=0.6, pad=0.02, label="lr_means (mean of samples)")
    handles = [Line2D([], [], marker="o", ls="", color="grey", markersize=math.sqrt(v * SIZE_SCALE),
                      label=f"{v:.0%}") for v in (0.1, 0.5, 1.0)]
    handles.append(Line2D([], [], marker="o", ls="", markerfacecolor="none",
                          markeredgecolor="black", markersize=10, label="FDR-significant"))
    axes[1].legend(handles=handles, title="lr_props", loc="upper left",
                   bbox_to_anchor=(1.3, 1.0), labelspacing=1.5, handletextpad=1.5,
                   borderpad=1.0)
    fig.suptitle(f"{contrast}: focus ligand {ARROW} receptor, sender {ARROW} receiver",
                 fontweight="bold")
    return fig


def focus_heatmap(interactions: pd.DataFrame, contrast: str, fdr: float = 0.05) -> Figure:
    """Effect on ``lr_means`` (condition - reference) per focus interaction as sender x
    receiver heat maps; grey = not tested, ``*`` = BH FDR below ``fdr``."""
    set_style()
    units = focus_units(interactions, contrast)
    shown = units.groupby("pair")["status"].transform(lambda s: (s == STATUS_TESTED).any())
    units = units[shown]
    if units.empty:
        return message_figure(f"no focus interaction was tested in contrast {contrast}",
                              title="focus interactions: effects")
    types = sorted(set(units["sender"]) | set(units["receiver"]))
    pairs = units.drop_duplicates("pair")["pair"].tolist()
    labels = dict(zip(pairs, _pair_labels(units), strict=True))
    tested = units[units["status"] == STATUS_TESTED]
    limit = float(np.nanmax(np.abs(tested["effect"]))) if len(tested) else 1.0
    limit = limit if np.isfinite(limit) and limit > 0 else 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit)
    ncol = min(4, len(pairs))
    nrow = math.ceil(len(pairs) / ncol)
    side = 0.32 * len(types) + 1.6
    fig, axes = plt.subplots(nrow, ncol, figsize=(ncol * side + 2.5, nrow * side + 1.5),
                             squeeze=False)
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#d9d9d9")
    image = None
    for ax, pair in zip(axes.ravel(), pairs, strict=False):
        sub = tested[tested["pair"] == pair]
        grid = sub.pivot_table(index="sender", columns="receiver", values="effect")
        grid = grid.reindex(index=types, columns=types)
        image = ax.imshow(grid.to_numpy(float), cmap=cmap, norm=norm, aspect="equal")
        for r in sub[sub["significant"]].itertuples():
            ax.text(types.index(r.receiver), types.index(r.sender), "*", ha="center",
                    va="center", fontsize=12, fontweight="bold")
        ax.set_title(labels[pair], fontsize=9)
        ax.grid(False)
    for i, ax in enumerate(axes.ravel()):
        if i >= len(pairs):
            ax.remove()
            continue
        bottom, left = i + ncol >= len(pairs), i % ncol == 0
        ax.set_xticks(range(len(types)), types if bottom else [], fontsize=8)
        ax.set_yticks(range(len(types)), types if left else [], fontsize=8)
        plt.setp(ax.get_xticklabels(), rotation=60, ha="right", rotation_mode="anchor")
        ax.set_xlabel("receiver" if bottom else "")
        ax.set_ylabel("sender" if left else "")
    fig.colorbar(image, ax=list(axes.ravel()[:len(pairs)]), shrink=0.5,
                 label="lr_means effect (condition - reference)")
    fig.suptitle(f"{contrast}: focus interactions, change with condition "
                 f"(* FDR < {fdr:g}, grey = not tested)", fontweight="bold")
    return fig
