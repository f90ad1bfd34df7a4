"""Figures of the workflow, drawn in one style.

Colours are fixed per condition and per cell type across every figure (Okabe-Ito and
colour-blind-safe seaborn palettes), fonts are readable at report size, axes carry units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import anndata as ad  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scanpy as sc  # noqa: E402
import seaborn as sns  # noqa: E402

OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7",
             "#000000"]
CONDITION_COLOURS = {"control": "#7F7F7F", "PBS": "#7F7F7F", "MSC": "#0072B2",
                     "apoptotic_MSC": "#D55E00", "LPS": "#E69F00"}
CELL_TYPE_ORDER = (
    "alveolar_macrophage", "interstitial_macrophage", "kupffer_cell", "momf",
    "classical_monocyte", "nonclassical_monocyte", "neutrophil", "nk_cell", "t_cell",
    "b_cell", "endothelial", "at1", "at2", "hepatocyte", "stellate_fibroblast", "unassigned",
)  # fmt: skip


def set_style() -> None:
    """Apply the mscflow figure style (call before drawing)."""
    sns.set_theme(context="notebook", style="ticks", font_scale=1.0,
                  rc={"figure.dpi": 100, "savefig.dpi": 110, "axes.titleweight": "bold",
                      "axes.spines.right": False, "axes.spines.top": False,
                      "legend.frameon": False})
    sc.settings.set_figure_params(dpi=100, dpi_save=110, frameon=False, vector_friendly=True)


def condition_palette(conditions: Sequence[str]) -> dict[str, str]:
    """Fixed colours for known conditions, Okabe-Ito for the rest (stable by sorted name)."""
    spare = iter(c for c in OKABE_ITO if c not in CONDITION_COLOURS.values())
    return {c: CONDITION_COLOURS.get(c) or next(spare, "#999999")
            for c in sorted(map(str, conditions))}


def cell_type_palette(cell_types: Sequence[str]) -> dict[str, str]:
    """One colour per cell type, the same in every figure of every run."""
    colours = sns.color_palette("tab20", 20).as_hex()
    fixed = {ct: colours[i] for i, ct in enumerate(CELL_TYPE_ORDER)}
    fixed["unassigned"] = "#BBBBBB"
    extra = iter(colours[len(CELL_TYPE_ORDER):])
    return {ct: fixed.get(ct) or next(extra, "#444444") for ct in sorted(map(str, cell_types))}


def save(fig: plt.Figure, path: str) -> None:
    """Save a figure as PNG and close it."""
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def qc_distributions(metrics: pd.DataFrame, summary: pd.DataFrame) -> plt.Figure:
    """Per-sample violins of counts, genes and mitochondrial % with applied thresholds."""
    set_style()
    panels = [
        ("total_counts", "UMI counts per cell", True, "threshold_min_counts",
         "threshold_max_counts"),
        ("n_genes_by_counts", "genes detected per cell", True, "threshold_min_genes",
         "threshold_max_genes"),
        ("pct_counts_mt", "mitochondrial counts (%)", False, None, "threshold_max_pct_mito"),
    ]
    order = list(summary["sample"])
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6, 0.7 * len(order)), 10),
                             sharex=True)
    thresholds = summary.set_index("sample")
    for ax, (col, label, log_scale, lo_col, hi_col) in zip(axes, panels, strict=True):
        values = metrics[[col, "sample"]].copy()
        if log_scale:
            values[col] = np.log10(values[col].clip(lower=1))
        sns.violinplot(data=values, x="sample", y=col, order=order, ax=ax, color="#56B4E9",
                       inner=None, cut=0, density_norm="width", linewidth=0.5)
        for i, sample in enumerate(order):
            for thr_col, colour in ((lo_col, "#D55E00"), (hi_col, "#D55E00")):
                if thr_col is None:
                    continue
                thr = float(thresholds.loc[sample, thr_col])
                y = np.log10(max(thr, 1)) if log_scale else thr
                ax.hlines(y, i - 0.4, i + 0.4, colors=colour, linewidth=1.5)
        ax.set_ylabel(f"log10 {label}" if log_scale else label)
        ax.set_xlabel("")
    axes[-1].tick_params(axis="x", rotation=60)
    axes[0].set_title("QC metrics per sample (red lines: thresholds applied)")
    return fig


def doublet_scores(metrics: pd.DataFrame, summary: pd.DataFrame) -> plt.Figure:
    """Histogram of scrublet doublet scores per sample with its threshold."""
    set_style()
    order = list(summary["sample"])
    ncols = min(4, len(order))
    nrows = int(np.ceil(len(order) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.4 * nrows), squeeze=False,
                             sharex=True)
    thresholds = summary.set_index("sample")["threshold_doublet_score"]
    for ax, sample in zip(axes.ravel(), order, strict=False):
        scores = metrics.loc[metrics["sample"] == sample, "doublet_score"].dropna()
        ax.hist(scores, bins=40, color="#009E73")
        if np.isfinite(thresholds.get(sample, np.nan)):
            ax.axvline(thresholds[sample], color="#D55E00", linewidth=1.5)
        ax.set_title(sample, fontsize=9)
        ax.set_xlabel("doublet score (scrublet)")
        ax.set_ylabel("cells")
    for ax in axes.ravel()[len(order):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def umap_panels(adata: ad.AnnData, keys: Sequence[str], *, titles: Mapping[str, str] | None = None,
                ncols: int = 2) -> plt.Figure:
    """UMAP coloured by each obs key, with the fixed palettes for conditions and cell types."""
    set_style()
    for key in keys:
        if key == "condition":
            adata.uns["condition_colors"] = [
                condition_palette(adata.obs[key].cat.categories)[c]
                for c in adata.obs[key].cat.categories
            ]
        elif key == "cell_type":
            pal = cell_type_palette(adata.obs[key].cat.categories)
            adata.uns["cell_type_colors"] = [pal[c] for c in adata.obs[key].cat.categories]
    fig = sc.pl.umap(adata, color=list(keys), ncols=ncols, show=False, return_fig=True,
                     title=[(titles or {}).get(k, k) for k in keys], size=6, wspace=0.45)
    return fig


def mean_score_heatmap(mean_scores: pd.DataFrame, condition: str) -> plt.Figure:
    """Heatmap of mean scores (cell type x set) for one condition."""
    set_style()
    table = mean_scores[mean_scores["condition"] == condition].pivot_table(
        index="cell_type", columns="gene_set", values="mean_score", aggfunc="mean")
    fig, ax = plt.subplots(figsize=(0.45 * table.shape[1] + 3, 0.4 * table.shape[0] + 2))
    sns.heatmap(table, cmap="vlag", center=0, ax=ax, cbar_kws={"label": "mean score"})
    ax.set_title(f"Mean gene-set score per cell type: {condition}")
    ax.set_xlabel("gene set")
    ax.set_ylabel("cell type")
    return fig


def marker_set_dotplot(dot: pd.DataFrame) -> plt.Figure:
    """Dot plot of marker sets (columns) by label (rows): colour mean log expression of the
    set's genes, size the mean fraction of cells expressing them."""
    set_style()
    agg = dot.groupby(["group", "set"], as_index=False)[
        ["mean_expression", "fraction_expressing"]].mean()
    groups = sorted(agg["group"].unique(), key=_cell_type_rank)
    sets = sorted(agg["set"].unique(), key=_cell_type_rank)
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


def _cell_type_rank(name: str) -> tuple[int, str]:
    order = {ct: i for i, ct in enumerate(CELL_TYPE_ORDER)}
    return (order.get(name, len(order)), name)


def score_violins(obs: pd.DataFrame, sets: Sequence[str]) -> plt.Figure:
    """Violins of scores by cell type, split by condition, one row per gene set."""
    set_style()
    cell_types = sorted(obs["cell_type"].astype(str).unique(), key=_cell_type_rank)
    palette = condition_palette(obs["condition"].astype(str).unique())
    fig, axes = plt.subplots(len(sets), 1, figsize=(max(8, 0.8 * len(cell_types)),
                                                    2.6 * len(sets)), sharex=True,
                             squeeze=False)
    data = obs.assign(cell_type=obs["cell_type"].astype(str),
                      condition=obs["condition"].astype(str))
    for ax, name in zip(axes[:, 0], sets, strict=True):
        sns.violinplot(data=data, x="cell_type", y=f"score_{name}", hue="condition",
                       order=cell_types, hue_order=sorted(palette), palette=palette, ax=ax,
                       inner=None, cut=0, density_norm="width", linewidth=0.4)
        ax.set_ylabel(f"{name}\nscore (a.u.)")
        ax.set_xlabel("")
        ax.legend_.remove() if ax.legend_ and ax is not axes[0, 0] else None
    axes[0, 0].legend(title="condition", bbox_to_anchor=(1.01, 1), loc="upper left")
    axes[-1, 0].tick_params(axis="x", rotation=60)
    return fig
