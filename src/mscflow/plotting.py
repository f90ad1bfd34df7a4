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

from mscflow.io import write_figure_atomic  # noqa: E402

# Okabe & Ito (2008) colour-blind-safe palette.
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7",
             "#000000"]
# Controls grey, treatments in Okabe-Ito hues distinguishable under the common colour-vision
# deficiencies.
CONDITION_COLOURS = {"control": "#7F7F7F", "PBS": "#7F7F7F", "MSC": "#0072B2",
                     "apoptotic_MSC": "#D55E00", "LPS": "#E69F00"}
CONTROL_CONDITIONS = ("control", "PBS", "vehicle", "sham", "naive", "untreated")
CELL_TYPE_ORDER = (
    "alveolar_macrophage", "interstitial_macrophage", "kupffer_cell", "momf",
    "classical_monocyte", "nonclassical_monocyte", "neutrophil", "nk_cell", "t_cell",
    "b_cell", "endothelial", "at1", "at2", "hepatocyte", "stellate_fibroblast", "unassigned",
)  # fmt: skip
# Paul Tol's colour-blind-safe "muted" and "light" schemes, one fixed colour per cell type.
CELL_TYPE_COLOURS = {
    "alveolar_macrophage": "#CC6677", "interstitial_macrophage": "#882255",
    "kupffer_cell": "#AA4499", "momf": "#EE8866", "classical_monocyte": "#DDCC77",
    "nonclassical_monocyte": "#999933", "neutrophil": "#332288", "nk_cell": "#88CCEE",
    "t_cell": "#44AA99", "b_cell": "#117733", "endothelial": "#77AADD", "at1": "#FFAABB",
    "at2": "#BBCC33", "hepatocyte": "#AAAA00", "stellate_fibroblast": "#99DDFF",
    "unassigned": "#BBBBBB",
}  # fmt: skip
# Cell types outside the curated list get these, in sorted order of their names.
SPARE_COLOURS = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#44BB99",
                 "#EEDD88", "#000000")
BASE_FONT_SIZE = 11


def set_style() -> None:
    """Apply the mscflow figure style (call before drawing)."""
    sns.set_theme(context="notebook", style="ticks", font="DejaVu Sans",
                  rc={"figure.dpi": 100, "savefig.dpi": 110, "font.size": BASE_FONT_SIZE,
                      "axes.titlesize": BASE_FONT_SIZE + 1, "axes.labelsize": BASE_FONT_SIZE,
                      "xtick.labelsize": BASE_FONT_SIZE - 1,
                      "ytick.labelsize": BASE_FONT_SIZE - 1,
                      "legend.fontsize": BASE_FONT_SIZE - 1, "axes.titleweight": "bold",
                      "axes.spines.right": False, "axes.spines.top": False,
                      "legend.frameon": False})
    sc.settings.set_figure_params(dpi=100, dpi_save=110, frameon=False, vector_friendly=True,
                                  fontsize=BASE_FONT_SIZE)


def condition_order(conditions: Sequence[str]) -> list[str]:
    """Conditions with controls first (in CONTROL_CONDITIONS order), then the rest sorted."""
    names = sorted(set(map(str, conditions)))
    controls = [c for c in CONTROL_CONDITIONS if c in names]
    return controls + [c for c in names if c not in controls]


def condition_palette(conditions: Sequence[str]) -> dict[str, str]:
    """Fixed colours for known conditions, Okabe-Ito for the rest, in condition_order.

    Unknown conditions take the unused Okabe-Ito colours in sorted order of their names, so a
    condition keeps its colour in every figure of a run.
    """
    spare = iter(c for c in OKABE_ITO if c not in CONDITION_COLOURS.values())
    unknown = {c: next(spare, "#999999")
               for c in sorted(map(str, conditions)) if c not in CONDITION_COLOURS}
    return {c: CONDITION_COLOURS.get(c) or unknown[c] for c in condition_order(conditions)}


def cell_type_palette(cell_types: Sequence[str]) -> dict[str, str]:
    """One colour per cell type, the same in every figure of every run (curated types).

    Types outside the curated list take SPARE_COLOURS in sorted order of their names.
    """
    names = sorted(set(map(str, cell_types)), key=_cell_type_rank)
    spare = iter(SPARE_COLOURS)
    return {ct: CELL_TYPE_COLOURS.get(ct) or next(spare, "#444444") for ct in names}


def save(fig: plt.Figure, path: str, dpi: float | None = None) -> None:
    """Save a figure (atomically, without a timestamp or software tag) and close it;
    ``dpi`` None keeps matplotlib's setting."""
    options = {} if dpi is None else {"dpi": dpi}
    write_figure_atomic(fig, path, bbox_inches="tight", metadata={"Software": None}, **options)
    plt.close(fig)


def _rotate_xticklabels(ax: plt.Axes, rotation: float = 45) -> None:
    """Rotate x tick labels so that each ends under its tick."""
    plt.setp(ax.get_xticklabels(), rotation=rotation, ha="right", rotation_mode="anchor")


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
    _rotate_xticklabels(axes[-1])
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


def cell_type_means(mean_scores: pd.DataFrame) -> pd.DataFrame:
    """Mean score per condition, tissue, cell type and gene set, samples as replicates.

    ``mean_scores`` is the long table of :func:`mscflow.summary.mean_scores` (one row per
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
                              key=lambda s: s.map(_cell_type_rank) if s.name == "cell_type"
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
    _rotate_xticklabels(ax, 60)
    return fig


def resolution_comparison(agreement: pd.DataFrame) -> plt.Figure:
    """Clusters per Leiden resolution (bars) and adjusted Rand index between resolutions.

    ``agreement`` is the table of :func:`mscflow.cluster.resolution_agreement` with columns
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
                       order=cell_types, hue_order=list(palette), palette=palette, ax=ax,
                       inner=None, cut=0, density_norm="width", linewidth=0.4)
        ax.set_title(name, loc="left")
        ax.set_ylabel("score (a.u.)")
        ax.set_xlabel("")
        if ax.legend_ is not None and ax is not axes[0, 0]:
            ax.legend_.remove()
    axes[0, 0].legend(title="condition", bbox_to_anchor=(1.01, 1), loc="upper left")
    axes[-1, 0].set_xlabel("cell type")
    _rotate_xticklabels(axes[-1, 0])
    fig.tight_layout()
    return fig
