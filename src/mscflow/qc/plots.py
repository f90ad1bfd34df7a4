"""Figures of the QC stage: per-sample metric distributions and doublet scores."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from mscflow.plotting import BASE_FONT_SIZE, rotate_xticklabels, set_style


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
    rotate_xticklabels(axes[-1])
    axes[0].set_title("QC metrics per sample before filtering (red lines: thresholds applied)")
    return fig


def doublet_scores(metrics: pd.DataFrame, summary: pd.DataFrame) -> plt.Figure:
    """Doublet scores per sample with the threshold applied (solid) and the score above
    which the expected share of cells lies (dashed), then a panel of calls per sample:
    the share called against the expected rate."""
    set_style()
    order = list(summary["sample"])
    ncols = min(4, len(order) + 1)
    nrows = int(np.ceil((len(order) + 1) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.5 * nrows), squeeze=False)
    rows = summary.set_index("sample")
    method = str(rows["doublet_method"].iloc[0]) if len(rows) else ""
    for ax, sample in zip(axes.ravel(), order, strict=False):
        scores = metrics.loc[metrics["sample"] == sample, "doublet_score"].dropna()
        row = rows.loc[sample]
        ax.hist(scores, bins=40, color="#009E73")
        ax.set_yscale("log")  # the few doublets in the tail stay visible
        title = f"{sample}: no scores"
        if len(scores):
            cut = float(np.quantile(scores, 1 - min(row["expected_doublet_rate"], 1.0)))
            ax.axvline(cut, color="#0072B2", linestyle="--", linewidth=1.2)
            title = f"{sample}: {int(row['n_doublet'])} called"
            if np.isfinite(row["threshold_doublet_score"]):
                ax.axvline(row["threshold_doublet_score"], color="#D55E00", linewidth=1.5)
            title += f", {row['n_doublet_expected']:.0f} expected"
        ax.set_title(title, fontsize=BASE_FONT_SIZE - 1)
        ax.set_xlabel(f"doublet score ({method})")
        ax.set_ylabel("cells (log scale)")
    calls = axes.ravel()[len(order)]
    y = np.arange(len(order))
    calls.barh(y, 100 * rows.loc[order, "called_doublet_rate"], color="#D55E00",
               label="called")
    calls.scatter(100 * rows.loc[order, "expected_doublet_rate"], y, color="#0072B2",
                  marker="|", s=200, zorder=3, label="expected")
    calls.set_yticks(y, order, fontsize=BASE_FONT_SIZE - 2)
    calls.invert_yaxis()
    calls.set_xlabel("doublets (% of cells scored)")
    calls.set_title("calls per sample", fontsize=BASE_FONT_SIZE - 1)
    calls.legend(loc="lower right", fontsize=BASE_FONT_SIZE - 2)
    for ax in axes.ravel()[len(order) + 1:]:
        ax.set_visible(False)
    fig.text(0.01, 0.003, "solid: threshold applied; dashed: score above which the expected "
             "share of cells lies", fontsize=BASE_FONT_SIZE - 2)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig
