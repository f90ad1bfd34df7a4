"""Plots for condition contrasts: forest plot, composition bars, volcano, GSEA enrichment.

The plot functions take the tidy tables written by :mod:`mscflow.contrast` and return a
matplotlib ``Figure`` (Agg backend, no global state beyond the figure itself);
:func:`forest_figure` and :func:`gsea_figure` are what the plot rules do, from files.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mscflow.contrast import (
    STATUS_TESTED,
    ContrastSettings,
    gsea_sets_for_plot,
    ranking_from_de,
    running_enrichment,
)
from mscflow.genesets import read_library
from mscflow.plotting import cell_type_palette, message_figure, set_style

__all__ = [
    "composition_bars",
    "forest_figure",
    "forest_plot",
    "gsea_enrichment_plot",
    "gsea_figure",
    "volcano_plot",
]

log = logging.getLogger(__name__)

SIG_COLOR = "#c0392b"
NS_COLOR = "#7f8c8d"


def _tight(fig: Figure) -> None:
    """tight_layout leaving ~0.45 inch on top for the suptitle."""
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))


def forest_plot(
    shifts: pd.DataFrame, metric: str = "mean", fdr: float = 0.05,
    gene_sets: Sequence[str] | None = None,
) -> Figure:
    """Effect (condition - reference) with 95% CI per cell type x gene set, one panel per
    contrast, for ``gene_sets`` (all when None or none present). Filled red =
    BH-significant (FDR over all sets of the table); open = not tested (status shown)."""
    set_style()
    df = shifts[shifts["metric"] == metric]
    if gene_sets:
        keep = df["gene_set"].isin(list(gene_sets))
        df = df[keep] if keep.any() else df
    if df.empty:
        return message_figure(f"No score-shift rows for metric {metric!r}.", "Score shifts")
    contrasts = list(dict.fromkeys(df["contrast"]))
    nrows = max(df.groupby("contrast").size())
    fig, axes = plt.subplots(
        1, len(contrasts), figsize=(5.2 * len(contrasts), 0.28 * nrows + 1.6),
        squeeze=False, sharex=False,
    )
    for ax, name in zip(axes[0], contrasts, strict=True):
        sub = df[df["contrast"] == name].sort_values(["cell_type", "gene_set"]).reset_index()
        y = np.arange(len(sub))[::-1]
        tested = (sub["status"] == STATUS_TESTED).to_numpy()
        sig = (sub["padj"] < fdr).fillna(False).to_numpy()
        has_ci = np.isfinite(sub["ci_low"]).to_numpy() & np.isfinite(sub["ci_high"]).to_numpy()
        for i in range(len(sub)):
            col = SIG_COLOR if sig[i] else NS_COLOR
            if has_ci[i]:
                ax.plot([sub.at[i, "ci_low"], sub.at[i, "ci_high"]], [y[i], y[i]], color=col,
                        lw=1.2)
            if np.isfinite(sub.at[i, "effect"]):
                ax.plot(sub.at[i, "effect"], y[i], "o", color=col,
                        mfc=col if tested[i] else "white", ms=5)
            if not tested[i]:
                ax.annotate(sub.at[i, "status"].replace("_", " "), (1.0, y[i]),
                            xycoords=("axes fraction", "data"), xytext=(3, 0),
                            textcoords="offset points", va="center", fontsize=7,
                            color="#555555")
        ax.axvline(0, color="black", lw=0.6, ls="--")
        ax.set_yticks(y)
        ax.set_yticklabels(sub["cell_type"] + " | " + sub["gene_set"], fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(f"shift in per-sample {metric} (95% CI)")
        ax.set_ylim(-0.7, len(sub) - 0.3)
    fig.suptitle(f"Gene-set score shifts (red: BH FDR < {fdr}; open: not tested)", fontsize=10)
    _tight(fig)
    return fig


def composition_bars(props: pd.DataFrame, tests: pd.DataFrame | None = None) -> Figure:
    """Stacked cell-type proportions per sample, one panel per tissue, samples grouped
    by condition; significant types from ``tests`` are starred in the legend."""
    if props.empty:
        return message_figure("No cells to summarise.", "Composition")
    tissues = sorted(props["tissue"].unique())
    types = sorted(props["cell_type"].unique())
    set_style()
    palette = cell_type_palette(types)
    starred = set()
    if tests is not None and not tests.empty:
        starred = set(zip(tests.loc[tests["significant"], "tissue"],
                          tests.loc[tests["significant"], "cell_type"], strict=True))
    n_samples = props.groupby("tissue")["sample"].nunique()
    fig, axes = plt.subplots(
        1, len(tissues), figsize=(max(4.0, 0.45 * n_samples.sum() + 3 * len(tissues)), 4.2),
        squeeze=False,
    )
    for ax, tissue in zip(axes[0], tissues, strict=True):
        sub = props[props["tissue"] == tissue]
        wide = sub.pivot(index="sample", columns="cell_type", values="proportion").fillna(0)
        cond = sub.groupby("sample")["condition"].first()
        order = sorted(wide.index, key=lambda s: (cond[s], s))
        wide = wide.loc[order]
        bottom = np.zeros(len(wide))
        for ct in [t for t in types if t in wide.columns]:
            label = f"{ct} *" if (tissue, ct) in starred else ct
            ax.bar(range(len(wide)), wide[ct], bottom=bottom, color=palette[ct], label=label,
                   width=0.85)
            bottom += wide[ct].to_numpy()
        ax.set_xticks(range(len(wide)))
        ax.set_xticklabels([f"{s}\n({cond[s]})" for s in wide.index], rotation=90, fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_ylabel("proportion of cells")
        ax.set_title(tissue)
        ax.legend(fontsize=7, frameon=False, bbox_to_anchor=(1.0, 1.0), loc="upper left")
    fig.suptitle("Cell-type composition per sample (* = BH-significant change)", fontsize=10)
    _tight(fig)
    return fig


def volcano_plot(de: pd.DataFrame, contrast: str, fdr: float = 0.05, label_top: int = 5
                 ) -> Figure:
    """Volcano (log2FC vs -log10 p) per cell type of one contrast; cell types without a
    test get a panel stating why."""
    set_style()
    sub = de[de["contrast"] == contrast]
    if sub.empty:
        return message_figure(f"No pseudobulk DE rows for contrast {contrast!r}.", contrast)
    cts = sorted(sub["cell_type"].unique())
    ncol = min(3, len(cts))
    nrow = int(np.ceil(len(cts) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.6 * nrow), squeeze=False)
    for ax, ct in zip(axes.ravel(), cts, strict=False):
        d = sub[sub["cell_type"] == ct]
        if d["status"].iloc[0] != STATUS_TESTED:
            ax.axis("off")
            ax.text(0.5, 0.5, f"{ct}\n{d['status'].iloc[0]}: {d['note'].iloc[0]}", ha="center",
                    va="center", fontsize=7, wrap=True)
            continue
        d = d.dropna(subset=["pvalue", "log2FoldChange"])
        sig = (d["padj"] < fdr).fillna(False).to_numpy()
        yv = -np.log10(np.clip(d["pvalue"].to_numpy(float), 1e-300, 1))
        ax.scatter(d["log2FoldChange"], yv, s=5, c=np.where(sig, SIG_COLOR, NS_COLOR),
                   linewidths=0, rasterized=True)
        top = d.assign(_y=yv).sort_values(["_y", "gene"], ascending=[False, True])
        for _, r in top[top["padj"] < fdr].head(label_top).iterrows():
            ax.annotate(r["gene"], (r["log2FoldChange"], r["_y"]), fontsize=6)
        ax.axvline(0, color="black", lw=0.5, ls="--")
        ax.set_title(f"{ct} ({int(sig.sum())} genes FDR < {fdr})", fontsize=9)
        ax.set_xlabel("log2 fold change")
        ax.set_ylabel("-log10 p")
    for ax in axes.ravel()[len(cts):]:
        ax.axis("off")
    fig.suptitle(f"Pseudobulk DE: {contrast}", fontsize=10)
    _tight(fig)
    return fig


def gsea_enrichment_plot(
    de: pd.DataFrame,
    gsea: pd.DataFrame,
    gene_sets: Mapping[str, Sequence[str]],
    contrast: str,
    set_names: Sequence[str],
    weight: float = 1.0,
) -> Figure:
    """Running enrichment score and hit positions for ``set_names`` (columns) in every
    tested cell type (rows) of one contrast; titles give NES and FDR. ``gene_sets`` maps
    set names to gene lists (``GeneSetLibrary.programme_lists()``)."""
    set_style()
    g = gsea[(gsea["contrast"] == contrast) & (gsea["status"] == STATUS_TESTED)
             & gsea["gene_set"].isin(set_names)]
    if g.empty:
        return message_figure(
            f"No tested GSEA results for {list(set_names)} in {contrast!r} "
            "(see gsea.tsv status/note).", f"GSEA: {contrast}")
    cts = sorted(g["cell_type"].unique())
    names = [s for s in set_names if s in set(g["gene_set"])]
    fig, axes = plt.subplots(len(cts), len(names), figsize=(3.6 * len(names), 2.8 * len(cts)),
                             squeeze=False)
    for i, ct in enumerate(cts):
        ranking = ranking_from_de(de[(de["contrast"] == contrast) & (de["cell_type"] == ct)])
        for j, name in enumerate(names):
            ax = axes[i, j]
            row = g[(g["cell_type"] == ct) & (g["gene_set"] == name)]
            if row.empty:
                ax.axis("off")
                continue
            run = running_enrichment(ranking, gene_sets[name], weight)
            ax.plot(run["rank"], run["running_es"], color="#2e86c1", lw=1.2)
            ax.axhline(0, color="black", lw=0.5)
            lo = float(run["running_es"].min())
            ymin = min(lo, 0.0) - 0.12
            ax.vlines(run.loc[run["hit"], "rank"], ymin, ymin + 0.08, color="black", lw=0.5)
            r = row.iloc[0]
            ax.set_title(f"{ct} | {name}\nNES {r['nes']:.2f}, FDR {r['fdr']:.3g}", fontsize=8)
            ax.set_xlabel("gene rank (Wald stat, high = up in condition)", fontsize=7)
            ax.set_ylabel("running ES", fontsize=7)
    fig.suptitle(f"GSEA: {contrast}", fontsize=10)
    _tight(fig)
    return fig


def forest_figure(shifts: str | Path, settings: Mapping) -> Figure:
    """Rule contrast_plot_forest: the ``mean`` score shifts of ``forest_sets`` from the
    score-shift table, significance at the settings' FDR."""
    st = ContrastSettings.from_config(settings)
    return forest_plot(pd.read_parquet(shifts), "mean", st.fdr, st.forest_sets)


def gsea_figure(de: str | Path, gsea: str | Path, library: str | Path, contrast: str,
                settings: Mapping) -> Figure:
    """Rule contrast_plot_gsea: running enrichment of ``gsea.plot_sets`` (names or
    substrings) in one contrast, the sets' genes from the run's gene-set library."""

    st = ContrastSettings.from_config(settings)
    table = pd.read_parquet(gsea)
    names = gsea_sets_for_plot(table, st.gsea.plot_sets)
    log.info("plotting %s for %s", names, contrast)
    return gsea_enrichment_plot(pd.read_parquet(de), table,
                                read_library(library).programme_lists(), contrast, names,
                                st.gsea.weight)
