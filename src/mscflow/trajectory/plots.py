"""Figures of the trajectory stage: the PAGA graph over the UMAP, programme scores along
pseudotime and cell density along pseudotime, per condition with one line per sample.

The figure functions take what :mod:`mscflow.trajectory.core` writes (the trajectory h5ad, the
programme-bin table, the per-cell table) and return a matplotlib ``Figure``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mscflow.plotting import cell_type_palette, condition_palette, message_figure, set_style
from mscflow.trajectory.core import branch_cells

__all__ = ["density_figure", "paga_figure", "programme_figure", "pseudotime_density"]

SAMPLE_ALPHA = 0.35
DENSITY_POINTS = 101


def _grid(n: int, ncols: int, width: float, height: float, **kwargs: Any
          ) -> tuple[Figure, np.ndarray]:
    """A figure with ``n`` panels in rows of ``ncols``; unused axes hidden."""
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows),
                             squeeze=False, **kwargs)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def _condition_legend(fig: Figure, palette: dict[str, str]) -> None:
    """One legend for the figure: a thick line per condition, a thin one for samples."""
    handles = [plt.Line2D([], [], color=c, lw=2.5, label=f"{k} (mean of samples)")
               for k, c in palette.items()]
    handles.append(plt.Line2D([], [], color="#555555", lw=0.8, alpha=0.6,
                              label="one sample"))
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), frameon=False,
               bbox_to_anchor=(0.5, 1.0), fontsize=9)


def paga_figure(adata: Any, threshold: float) -> Figure:
    """One panel per tissue: the lineage cells on the run's UMAP coloured by pseudotime,
    PAGA nodes (groups, at their cells' median UMAP position, sized by cells, coloured by
    their majority cell type), edges with connectivity >= ``threshold`` (width by
    connectivity) and, dotted, the weaker edges of PAGA's spanning tree; the root cell is a
    red star."""
    tissues = list(adata.uns.get("trajectory", {}))
    if not tissues:
        return message_figure("No tissue has a trajectory (see results/trajectory/"
                              "tissues.tsv for why).", "PAGA")
    set_style()
    fig, axes = _grid(len(tissues), 3, 5.6, 5.0)
    scatter = None
    for ax, tissue in zip(axes, tissues, strict=False):
        info = adata.uns["trajectory"][tissue]
        obs = adata.obs[adata.obs["tissue"].astype(str) == tissue]
        umap = np.asarray(adata.obsm["X_umap"])[(adata.obs["tissue"].astype(str) == tissue)
                                                 .to_numpy()]
        order = np.argsort(obs["pseudotime"].to_numpy(), kind="stable")
        scatter = ax.scatter(umap[order, 0], umap[order, 1], c=obs["pseudotime"].to_numpy()[
            order], cmap="viridis", s=6, vmin=0, vmax=1, linewidths=0, rasterized=True)
        groups = [str(g) for g in info["paga"]["groups"]]
        group_of = obs["paga_group"].astype(str).to_numpy()
        pos = np.vstack([np.median(umap[group_of == g], axis=0) for g in groups])
        sizes = np.array([(group_of == g).sum() for g in groups])
        major = [obs.loc[group_of == g, "cell_type"].astype(str).value_counts().index[0]
                 for g in groups]
        conn = info["paga"]["connectivities"].tocoo()
        tree = info["paga"]["connectivities_tree"].tocsr()
        for i, j, w in zip(conn.row, conn.col, conn.data, strict=True):
            in_tree = bool(tree[i, j] or tree[j, i])
            if i < j and (w >= threshold or in_tree):
                strong = w >= threshold
                ax.plot(pos[[i, j], 0], pos[[i, j], 1], color="black",
                        lw=0.5 + 5 * w if strong else 0.8, ls="-" if strong else ":",
                        alpha=0.7, zorder=2, solid_capstyle="round")
        palette = cell_type_palette(major)
        ax.scatter(pos[:, 0], pos[:, 1], s=40 + 400 * np.sqrt(sizes / sizes.max()),
                   c=[palette[m] for m in major], edgecolors="black", linewidths=0.8, zorder=3)
        for (x, y), g in zip(pos, groups, strict=True):
            ax.annotate(g, (x, y), ha="center", va="center", fontsize=7, zorder=4)
        root = obs.index.get_loc(info["root_cell"])
        ax.scatter(umap[root, 0], umap[root, 1], marker="*", s=260, c="#D55E00",
                   edgecolors="white", linewidths=0.8, zorder=5)
        for label in sorted(set(major)):
            ax.scatter([], [], s=60, c=palette[label], edgecolors="black", label=label)
        ax.legend(fontsize=7, loc="best", frameon=False, title="PAGA group: majority label",
                  title_fontsize=7)
        ax.set_title(f"{tissue}: {len(obs)} cells, {len(groups)} groups")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("UMAP 1")
        ax.set_ylabel("UMAP 2")
    fig.colorbar(scatter, ax=list(axes[:len(tissues)]), shrink=0.7, label="diffusion pseudotime")
    fig.suptitle(f"PAGA on the lineage clusters over the UMAP (edges: connectivity >= "
                 f"{threshold:g}; dotted: weaker edges of the PAGA tree; star: root)",
                 fontsize=10)
    return fig


def programme_figure(bins: pd.DataFrame, sets: Sequence[str]) -> Figure:
    """Rows: tissue x branch; columns: the programme ``sets`` present. Mean score per
    equal-count pseudotime bin, at the bin's rank (so dense stretches of pseudotime are
    not squeezed; the top axis gives pseudotime): thick line per condition (mean of its
    samples), thin line per sample."""
    present = [s for s in sets if s in set(bins["gene_set"])]
    if bins.empty or not present:
        return message_figure("No programme scores along pseudotime (no trajectory, or none "
                              "of trajectory.plot_sets was scored).", "Programmes")
    set_style()
    paths = bins[["tissue", "branch"]].drop_duplicates().sort_values(["tissue", "branch"])
    palette = condition_palette(bins["condition"].unique())
    fig, axes = plt.subplots(len(paths), len(present), squeeze=False, sharey="col",
                             figsize=(3.3 * len(present), 2.7 * len(paths) + 0.6))
    for row, (tissue, branch) in enumerate(paths.itertuples(index=False)):
        part = bins[(bins["tissue"] == tissue) & (bins["branch"] == branch)]
        for col, name in enumerate(present):
            ax = axes[row, col]
            one = part[part["gene_set"] == name]
            for (level, condition, _), line in one.groupby(["level", "condition", "sample"],
                                                           sort=True, dropna=False):
                line = line.sort_values("bin")
                thick = level == "condition"
                ax.plot(line["rank_mid"], line["mean"], color=palette[condition],
                        lw=2.5 if thick else 0.8, alpha=1.0 if thick else SAMPLE_ALPHA,
                        marker="o" if thick else None, ms=3, zorder=3 if thick else 2)
            ax.set_title(f"{name}\n{tissue}: {branch}", fontsize=9)
            _pseudotime_axis(ax, one.drop_duplicates("bin"))
            ax.set_xlabel("pseudotime rank (cells of the branch)" if row == len(paths) - 1
                          else "")
            ax.set_ylabel("mean score" if col == 0 else "")
    _condition_legend(fig, palette)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    return fig


def _pseudotime_axis(ax: Any, bins: pd.DataFrame) -> None:
    """Rank axis 0-1 at the bottom; the pseudotime of a few bins on top."""
    ax.set_xlim(0, 1)
    picks = bins.sort_values("bin").iloc[:: max(1, len(bins) // 4)]
    top = ax.secondary_xaxis("top")
    top.set_xticks(picks["rank_mid"].to_numpy(float))
    top.set_xticklabels([f"{v:.2f}" for v in picks["pt_mid"]], fontsize=7, color="#555555")
    top.tick_params(length=2, pad=1)


def pseudotime_density(cells: pd.DataFrame) -> pd.DataFrame:
    """Gaussian-kernel density of pseudotime per tissue x branch x sample (trunk cells in
    every branch) on a grid over [0, 1]; samples with fewer than 3 distinct values are left
    out. Columns tissue, branch, condition, sample, pseudotime, density."""
    from scipy.stats import gaussian_kde

    grid = np.linspace(0.0, 1.0, DENSITY_POINTS)
    rows = []
    for (tissue, branch, condition, sample), part in branch_cells(cells).groupby(
            ["tissue", "branch", "condition", "sample"], sort=True):
        values = part["pseudotime"].to_numpy(float)
        if np.unique(values).size < 3:
            continue
        rows.append(pd.DataFrame({"tissue": tissue, "branch": branch, "condition": condition,
                                  "sample": sample, "pseudotime": grid,
                                  "density": gaussian_kde(values)(grid)}))
    columns = ["tissue", "branch", "condition", "sample", "pseudotime", "density"]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=columns)


def density_figure(cells: pd.DataFrame, late_quantile: float) -> Figure:
    """One panel per tissue x branch: pseudotime density per sample (thin) and per
    condition (thick, mean of its samples' densities); dashed: the ``late_quantile``
    threshold of ``frac_late``."""
    density = pseudotime_density(cells)
    if density.empty:
        return message_figure("No pseudotimes to draw (see results/trajectory/tissues.tsv).",
                              "Density")
    set_style()
    paths = density[["tissue", "branch"]].drop_duplicates().sort_values(["tissue", "branch"])
    palette = condition_palette(density["condition"].unique())
    fig, axes = _grid(len(paths), 3, 4.3, 3.2)
    timed = branch_cells(cells)
    for ax, (tissue, branch) in zip(axes, paths.itertuples(index=False), strict=False):
        part = density[(density["tissue"] == tissue) & (density["branch"] == branch)]
        for (condition, _), line in part.groupby(["condition", "sample"], sort=True):
            ax.plot(line["pseudotime"], line["density"], color=palette[condition], lw=0.8,
                    alpha=SAMPLE_ALPHA)
        for condition, line in part.groupby("condition", sort=True):
            mean = line.groupby("pseudotime")["density"].mean()
            ax.plot(mean.index, mean.to_numpy(), color=palette[condition], lw=2.5)
        pt = timed.loc[(timed["tissue"] == tissue) & (timed["branch"] == branch), "pseudotime"]
        ax.axvline(float(pt.quantile(late_quantile)), color="black", ls="--", lw=0.8)
        ax.set_title(f"{tissue}: {branch} ({len(pt)} cells)", fontsize=10)
        ax.set_xlabel("diffusion pseudotime")
        ax.set_ylabel("density")
        ax.set_xlim(0, 1)
    _condition_legend(fig, palette)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    return fig
