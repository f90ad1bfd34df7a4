"""Cell-type annotation of lung and liver cells from curated marker sets.

Every cell is scored for every marker set (``mscflow.scoring.core.score_gene_sets``); each cell
gets the best-scoring label its tissue allows, and each cluster (within a tissue) gets the
label with the best mean score, with two confidences: the margin between the best and the
second label's mean score, and the fraction of the cluster's cells whose own label agrees.
A cluster below any threshold is called ``"unassigned"``. Above them sits a "none of these"
floor: the best label's marker genes must really be expressed in the cluster
(:func:`markers_expressed`), so a population no candidate set describes (e.g. B cells whose
set a restricted panel dropped) stays ``unassigned`` instead of taking the nearest label.
Each cluster's table row says why it is unassigned (``reason``).

Candidate labels are the marker sets the data can score: a set the gene-set library
dropped (too few genes in a restricted panel) or with none of its genes in the data is
left out, and the log says which; a tissue left with no candidate label is an error
naming it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from mscflow.config import Settings, settings_section
from mscflow.errors import InputDataError
from mscflow.io import read_sample_rows, write_npz_atomic
from mscflow.scoring.core import score_gene_sets
from mscflow.vocab import UNASSIGNED

log = logging.getLogger(__name__)


# Labels that cannot occur in a tissue. Guilliams 2022 (liver atlas) finds no
# interstitial macrophages in liver; Kupffer cells and hepatocytes are liver-only; alveolar
# macrophages and AT1/AT2 cells are lung-only. Tissues the curated sets do not cover
# (blood, spleen, bone marrow) get the general immune and stromal labels only, without
# the lung- and liver-resident ones; bronchoalveolar lavage keeps the airway's alveolar
# macrophages and epithelium. Tissues not listed here restrict nothing.
LUNG_LIVER_RESIDENT = frozenset({"alveolar_macrophage", "interstitial_macrophage",
                                 "kupffer_cell", "at1", "at2", "hepatocyte"})
_BAL = LUNG_LIVER_RESIDENT - {"alveolar_macrophage", "at1", "at2"}
DEFAULT_EXCLUDED: dict[str, frozenset[str]] = {
    "lung": frozenset({"kupffer_cell", "hepatocyte"}),
    "liver": frozenset({"alveolar_macrophage", "interstitial_macrophage", "at1", "at2"}),
    **dict.fromkeys(("blood", "peripheral blood", "pbmc", "spleen", "bone marrow",
                     "bone_marrow"), LUNG_LIVER_RESIDENT),
    **dict.fromkeys(("bal", "bronchoalveolar lavage", "bronchoalveolar lavage fluid"), _BAL),
}

ScoreFn = Callable[..., pd.DataFrame]


@settings_section("annotation")
class AnnotationSettings(Settings):
    """Config section ``annotation``: how sure a cluster's label must be (keys in the
    schema; config/README.md)."""


CLUSTER_COLUMNS = [
    "cluster", "tissue", "label", "margin", "fraction_agreeing", "n_cells", "best_score",
    "second_label", "best_label", "markers_expressed", "reason", "top_marker_genes",
]


def allowed_mask(
    labels: Sequence[str],
    tissues: pd.Series | None,
    excluded: Mapping[str, frozenset[str] | set[str]] | None = None,
) -> np.ndarray:
    """Boolean matrix (n tissues entries x labels): True where the label is allowed."""
    excluded = DEFAULT_EXCLUDED if excluded is None else excluded
    labels = list(labels)
    if tissues is None:
        return np.ones((1, len(labels)), dtype=bool)
    keys = tissues.astype(str).str.lower().to_numpy()
    table = {t: np.array([lab not in excluded.get(t, ()) for lab in labels]) for t in set(keys)}
    return np.vstack([table[k] for k in keys]) if len(keys) else np.zeros((0, len(labels)), bool)


def _best_two(values: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: index of the best allowed column, its value, and the margin to the second."""
    masked = np.where(allowed, values, -np.inf)
    order = np.argsort(-masked, axis=1, kind="stable")
    best = order[:, 0]
    rows = np.arange(len(values))
    best_val = masked[rows, best]
    second_val = masked[rows, order[:, 1]] if values.shape[1] > 1 else np.full(len(rows), -np.inf)
    margin = np.where(np.isfinite(second_val), best_val - second_val, np.inf)
    return best, best_val, margin


def label_cells(
    scores: pd.DataFrame,
    tissues: pd.Series | None = None,
    *,
    excluded: Mapping[str, frozenset[str] | set[str]] | None = None,
    min_score: float = 0.0,
) -> pd.DataFrame:
    """Per-cell label: the best-scoring set its tissue allows (``unassigned`` if <= min_score).

    Returns columns label, score, margin (best minus second allowed score), indexed like
    ``scores``.
    """
    labels = list(scores.columns)
    if not labels:
        raise ValueError("annotation needs at least one marker set")
    allowed = allowed_mask(labels, None if tissues is None else tissues.loc[scores.index],
                           excluded)
    allowed = np.broadcast_to(allowed, scores.shape)
    if not allowed.any(axis=1).all():
        raise ValueError("some tissue excludes every marker set: check the exclusions")
    best, best_val, margin = _best_two(scores.to_numpy(dtype=float), allowed)
    label = np.array(labels, dtype=object)[best]
    label[best_val <= min_score] = UNASSIGNED
    return pd.DataFrame({"label": label, "score": best_val, "margin": margin},
                        index=scores.index)


def decide_clusters(
    scores: pd.DataFrame,
    cell_labels: pd.Series,
    clusters: pd.Series,
    tissues: pd.Series | None = None,
    *,
    excluded: Mapping[str, frozenset[str] | set[str]] | None = None,
    min_score: float = 0.0,
    min_margin: float = 0.05,
    min_fraction: float = 0.5,
) -> pd.DataFrame:
    """Cluster-level decision per (cluster, tissue) from mean scores, with confidences.

    ``margin`` is the best minus the second-best allowed mean score; ``fraction_agreeing``
    the share of the group's cells whose own label equals the group's label. A group whose
    best mean score is <= ``min_score``, or whose margin < ``min_margin``, or whose fraction
    < ``min_fraction``, is ``unassigned``.
    """
    labels = list(scores.columns)
    tissue = (pd.Series("", index=scores.index) if tissues is None
              else tissues.loc[scores.index].astype(str))
    keys = pd.DataFrame({"cluster": clusters.loc[scores.index].astype(str).to_numpy(),
                         "tissue": tissue.to_numpy()}, index=scores.index)
    grouped = scores.groupby([keys["cluster"], keys["tissue"]], sort=True)
    means = grouped.mean()
    sizes = grouped.size()
    group_tissues = pd.Series(means.index.get_level_values("tissue"), index=means.index)
    allowed = allowed_mask(labels, None if tissues is None else group_tissues, excluded)
    allowed = np.broadcast_to(allowed, means.shape)
    best, best_val, margin = _best_two(means.to_numpy(dtype=float), allowed)
    masked = np.where(allowed, means.to_numpy(dtype=float), -np.inf)
    second = np.argsort(-masked, axis=1, kind="stable")[:, 1] if len(labels) > 1 else best
    rows = []
    for i, (cluster, tis) in enumerate(means.index):
        label = labels[best[i]]
        members = keys.index[(keys["cluster"] == cluster) & (keys["tissue"] == tis)]
        fraction = float((cell_labels.loc[members] == label).mean())
        reasons = []
        if not best_val[i] > min_score:
            reasons.append(f"best mean marker score {best_val[i]:.3g} <= {min_score:g}")
        if margin[i] < min_margin:
            reasons.append(f"margin {margin[i]:.3g} over {labels[second[i]]} < "
                           f"annotation.min_margin {min_margin:g}")
        if fraction < min_fraction:
            reasons.append(f"{fraction:.0%} of its cells agree < annotation.min_fraction "
                           f"{min_fraction:g}")
        rows.append({
            "cluster": cluster, "tissue": tis, "label": UNASSIGNED if reasons else label,
            "margin": float(margin[i]), "fraction_agreeing": fraction,
            "n_cells": int(sizes.loc[(cluster, tis)]), "best_score": float(best_val[i]),
            "second_label": labels[second[i]], "best_label": label,
            "reason": "; ".join(reasons),
        })
    return pd.DataFrame(rows)


def markers_expressed(expression: GroupExpression, var_names: Sequence[str],
                      marker_sets: Mapping[str, Sequence[str] | Mapping[str, float]],
                      min_cells: float = 0.25) -> pd.DataFrame:
    """Share of each marker set's genes (those in ``var_names``) expressed in each group
    (rows: ``expression.groups``, columns: sets). A gene is expressed in a group when at
    least ``min_cells`` of the group's cells have a count of it and a larger share than of
    all other cells: a marker the group shares with every cell does not count."""
    col = {g: j for j, g in enumerate(var_names)}
    sizes = expression.sizes.astype(float)
    fractions = expression.fractions()
    rest = ((expression.expressing.sum(axis=0)[None, :] - expression.expressing)
            / np.maximum(sizes.sum() - sizes, 1)[:, None])
    out = {}
    for name, genes in marker_sets.items():
        idx = [col[g] for g in genes if g in col]
        if not idx:
            out[name] = np.zeros(len(sizes))
            continue
        expressed = (fractions[:, idx] >= min_cells) & (fractions[:, idx] > rest[:, idx])
        out[name] = expressed.mean(axis=1)
    return pd.DataFrame(out, index=expression.groups)


def apply_marker_floor(per_cluster: pd.DataFrame, expressed: pd.DataFrame,
                       marker_sets: Mapping[str, Sequence[str] | Mapping[str, float]],
                       min_expressed: float, min_genes: int = 0) -> pd.DataFrame:
    """The "none of these" floor: a cluster keeps its label only when at least
    ``min_expressed`` of that label's marker genes, and at least ``min_genes`` of them, are
    expressed in it (``expressed`` from :func:`markers_expressed`, rows
    ``"<cluster>|<tissue>"``). Adds ``markers_expressed`` (share for the best label) and
    extends ``reason``."""
    out = per_cluster.copy()
    keys = out["cluster"].astype(str) + "|" + out["tissue"].astype(str)
    share = np.array([float(expressed.at[k, lab]) for k, lab in zip(keys, out["best_label"],
                                                                     strict=True)])
    sizes = np.array([len(marker_sets[lab]) for lab in out["best_label"]])
    count = np.rint(share * sizes).astype(int)
    out["markers_expressed"] = share.round(4)
    low = (share < min_expressed) | (count < min_genes)
    for i in np.flatnonzero(low):
        label = out["best_label"].iat[i]
        bars = [f"{share[i]:.2f} < annotation.min_markers_expressed {min_expressed:g}"
                if share[i] < min_expressed else "",
                f"fewer than annotation.min_marker_genes_expressed {min_genes}"
                if count[i] < min_genes else ""]
        text = (f"{count[i]} of {sizes[i]} {label} markers expressed "
                f"({'; '.join(b for b in bars if b)})")
        previous = out["reason"].iat[i]
        out.iat[i, out.columns.get_loc("reason")] = f"{previous}; {text}" if previous else text
    out.loc[low, "label"] = UNASSIGNED
    return out


def log_unassigned(per_cluster: pd.DataFrame, unusable: Mapping[str, str]) -> None:
    """Log how many cells were left unassigned, per cluster with the reason."""
    gone = per_cluster[per_cluster["label"] == UNASSIGNED]
    total = int(per_cluster["n_cells"].sum())
    n_cells = int(gone["n_cells"].sum())
    log.info("annotation: %d of %d cells (%d of %d clusters) unassigned", n_cells, total,
             len(gone), len(per_cluster))
    for row in gone.itertuples():
        log.info("annotation: cluster %s%s (%d cells) unassigned: %s", row.cluster,
                 f" in {row.tissue}" if row.tissue else "", row.n_cells, row.reason)
    if unusable and n_cells:
        log.info("annotation: labels left out for want of marker genes (%s) cannot be "
                 "given; their populations are among the unassigned cells",
                 ", ".join(unusable))


def _matrix(adata: AnnData, layer: str | None):
    return adata.X if layer is None else adata.layers[layer]


@dataclass
class GroupExpression:
    """Per group of cells: the sum of every gene's values, the number of cells expressing it
    (value > 0) and the group's size. Sums of samples add up to the sums of all cells, so
    per-sample jobs can compute them and one job combine them (:meth:`combine`)."""

    groups: pd.Index  # group names, sorted
    sums: np.ndarray  # groups x genes, float64
    expressing: np.ndarray  # groups x genes, float64 (cells with value > 0)
    sizes: np.ndarray  # cells per group, int64

    @classmethod
    def from_matrix(cls, x, groups: pd.Series | np.ndarray) -> GroupExpression:
        """Sums over the rows of ``x`` (cells x genes, sparse or dense) by ``groups``."""
        cats = pd.Categorical(np.asarray(groups).astype(str))
        codes = np.asarray(cats.codes)
        n = len(cats.categories)
        indicator = sp.csr_matrix(
            (np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(n, len(codes))
        )
        binary = ((x > 0).astype(np.float32) if sp.issparse(x)
                  else (np.asarray(x) > 0).astype(float))
        sums, expressing = (indicator @ m for m in (x, binary))
        return cls(pd.Index(cats.categories.astype(str)), _dense(sums), _dense(expressing),
                   np.bincount(codes, minlength=n).astype(np.int64))

    @classmethod
    def combine(cls, parts: Sequence[GroupExpression]) -> GroupExpression:
        """Add up parts (e.g. one per sample) group by group."""
        if not parts:
            raise ValueError("no group expression to combine")
        groups = pd.Index(sorted(set().union(*(p.groups for p in parts))))
        n_genes = parts[0].sums.shape[1]
        out = cls(groups, np.zeros((len(groups), n_genes)), np.zeros((len(groups), n_genes)),
                  np.zeros(len(groups), dtype=np.int64))
        for part in parts:
            if part.sums.shape[1] != n_genes:
                raise ValueError(f"parts cover {n_genes} and {part.sums.shape[1]} genes")
            rows = groups.get_indexer(part.groups)
            out.sums[rows] += part.sums
            out.expressing[rows] += part.expressing
            out.sizes[rows] += part.sizes
        return out

    def regroup(self, mapping: Mapping[str, str]) -> GroupExpression:
        """Merge groups into coarser ones (``mapping``: group -> new group)."""
        new = pd.Series([mapping[g] for g in self.groups], dtype=str)
        parts = [GroupExpression(pd.Index([name]), self.sums[rows].sum(axis=0, keepdims=True),
                                 self.expressing[rows].sum(axis=0, keepdims=True),
                                 self.sizes[rows].sum(keepdims=True))
                 for name, rows in new.groupby(new).indices.items()]
        return GroupExpression.combine(parts)

    def means(self) -> np.ndarray:
        """Mean value per group and gene."""
        return self.sums / np.maximum(self.sizes, 1)[:, None]

    def fractions(self) -> np.ndarray:
        """Fraction of the group's cells expressing each gene."""
        return self.expressing / np.maximum(self.sizes, 1)[:, None]

    def save(self, path: str | Path) -> None:
        """Write to an ``.npz`` file (through a temporary file renamed into place)."""
        write_npz_atomic(path, groups=np.asarray(self.groups, dtype=str), sums=self.sums,
                         expressing=self.expressing, sizes=self.sizes)

    @classmethod
    def load(cls, path: str | Path) -> GroupExpression:
        """Read what :meth:`save` wrote."""
        with np.load(path) as f:
            return cls(pd.Index(f["groups"].astype(str).tolist()), f["sums"], f["expressing"],
                       f["sizes"])


def _dense(m) -> np.ndarray:
    return m.toarray() if sp.issparse(m) else np.asarray(m)


def cluster_groups(obs: pd.DataFrame, cluster_key: str, tissue_key: str | None = "tissue"
                   ) -> pd.Series:
    """The annotation's group of each cell: ``"<cluster>|<tissue>"`` (tissue empty when
    ``tissue_key`` is None or not in ``obs``)."""
    tissue = (obs[tissue_key].astype(str) if tissue_key is not None and tissue_key in obs
              else pd.Series("", index=obs.index))
    return obs[cluster_key].astype(str) + "|" + tissue


def sample_group_expression(h5ad: str | Path, sample: str, cluster_key: str
                            ) -> GroupExpression:
    """:class:`GroupExpression` of one sample's cells of a merged h5ad by
    :func:`cluster_groups` (read without the other samples' rows); no groups when the
    file holds no cell of the sample."""
    adata = read_sample_rows(h5ad, sample, [cluster_key], optional=["tissue"],
                             what="the annotation")
    if adata is None:
        backed = ad.read_h5ad(h5ad, backed="r")
        n_genes = backed.n_vars
        backed.file.close()
        return GroupExpression(pd.Index([]), np.zeros((0, n_genes)), np.zeros((0, n_genes)),
                               np.zeros(0, dtype=np.int64))
    return GroupExpression.from_matrix(adata.X, cluster_groups(adata.obs, cluster_key))


def top_genes(expression: GroupExpression, var_names: Sequence[str], n_genes: int = 5,
              min_fraction: float = 0.25) -> dict[str, list[str]]:
    """Top genes per group by mean expression minus the mean in all other cells; only
    genes expressed (> 0) in at least ``min_fraction`` of the group's cells count."""
    means, fractions = expression.means(), expression.fractions()
    counts = expression.sizes.astype(float)
    total = means * counts[:, None]
    rest = ((total.sum(axis=0)[None, :] - total)
            / np.maximum(counts.sum() - counts, 1)[:, None])
    diff = np.where(fractions >= min_fraction, means - rest, -np.inf)
    names = np.asarray(var_names)
    out = {}
    for i, group in enumerate(expression.groups):
        order = np.argsort(-diff[i], kind="stable")[:n_genes]
        out[group] = [names[j] for j in order if np.isfinite(diff[i, j])]
    return out


def top_marker_genes(
    adata: AnnData, groups: pd.Series, n_genes: int = 5, *, layer: str | None = None,
    min_fraction: float = 0.25,
) -> dict[str, list[str]]:
    """Top genes per group by mean expression minus the mean in all other cells
    (:func:`top_genes`). Expects log-normalised values (``adata.X`` or ``layer``)."""
    expression = GroupExpression.from_matrix(_matrix(adata, layer),
                                             groups.loc[adata.obs_names])
    return top_genes(expression, adata.var_names, n_genes, min_fraction)


def _default_score_fn() -> ScoreFn:
    return score_gene_sets


def _present_sets(marker_sets: Mapping[str, Sequence[str] | Mapping[str, float]],
                  var_names: pd.Index) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Keep the genes present in the data; a set with none is left out (returned with the
    reason as the second value)."""
    present = set(var_names)
    out, unusable = {}, {}
    for name, genes in marker_sets.items():
        kept = [g for g in genes if g in present]
        if kept:
            out[name] = kept
        else:
            unusable[name] = f"none of its genes in the data ({', '.join(list(genes)[:5])})"
    return out, unusable


def candidate_labels(labels: Sequence[str], tissues: Sequence[str],
                     unusable: Mapping[str, str],
                     excluded: Mapping[str, frozenset[str] | set[str]] | None = None
                     ) -> dict[str, list[str]]:
    """Labels each tissue can be given: the usable marker sets minus the tissue's
    exclusions. Logs the labels left out (``unusable``: set -> reason); raises
    :class:`InputDataError` naming a tissue left with none."""
    excluded = DEFAULT_EXCLUDED if excluded is None else excluded
    if unusable:
        log.warning("annotation: %d candidate label(s) left out, their marker sets are "
                    "unusable: %s", len(unusable),
                    "; ".join(f"{k} ({v})" for k, v in unusable.items()))
    out = {}
    for tissue in sorted(set(map(str, tissues))):
        not_here = excluded.get(tissue.lower(), ())
        out[tissue] = [lab for lab in labels if lab not in not_here]
        if not out[tissue]:
            lost = ", ".join(k for k in unusable if k not in not_here) or "none"
            raise InputDataError(
                f"annotation: tissue '{tissue}' has no candidate label left: the marker sets "
                f"it allows are unusable in this data (left out: {lost}; not allowed in "
                f"{tissue}: {', '.join(sorted(not_here)) or 'none'}). Use data with a fuller "
                "gene panel, lower genesets.min_genes, or add marker sets for this tissue "
                "(genesets.markers)."
            )
        log.info("annotation: tissue %s: %d candidate labels", tissue, len(out[tissue]))
    return out


def annotate(
    adata: AnnData,
    marker_sets: Mapping[str, Sequence[str] | Mapping[str, float]],
    cluster_key: str = "leiden_1.0",
    tissue_key: str | None = "tissue",
    *,
    scores: pd.DataFrame | None = None,
    excluded: Mapping[str, frozenset[str] | set[str]] | None = None,
    min_score: float = 0.0,
    min_margin: float = 0.05,
    min_fraction: float = 0.5,
    min_markers_expressed: float = 0.5,
    min_marker_genes_expressed: int = 3,
    marker_min_cells: float = 0.25,
    n_top_genes: int = 5,
    layer: str | None = None,
    method: str = "scanpy",
    random_state: int = 0,
    score_fn: ScoreFn | None = None,
    key_added: str = "celltype",
    unusable: Mapping[str, str] | None = None,
    expression: GroupExpression | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Label cells and clusters; write labels and confidences to ``adata.obs``.

    ``marker_sets``: ``{label: genes}`` named as in the data (see
    ``mscflow.genesets.match_gene_sets``); labels are the set names. ``tissue_key`` (obs
    column, e.g. from the sample sheet) restricts labels via ``excluded`` (default
    ``DEFAULT_EXCLUDED``); ``None`` or a missing column restricts nothing. ``scores``
    (cells x sets) skips scoring; otherwise ``score_fn`` (default
    ``mscflow.scoring.core.score_gene_sets``) is called with ``method``, ``layer`` and
    ``random_state``. ``unusable`` names marker sets already left out (e.g. dropped by
    the gene-set library) with the reason, for the log and the error of a tissue left
    without labels (:func:`candidate_labels`). ``expression``: the clusters' expression
    (groups of :func:`cluster_groups`, e.g. combined from per-sample jobs) for their top
    marker genes and the "none of these" floor (a cluster is unassigned unless
    ``min_markers_expressed`` of its label's markers, and ``min_marker_genes_expressed`` of
    them, are expressed in it, each in at least
    ``marker_min_cells`` of its cells: :func:`markers_expressed`); computed from
    ``X``/``layer`` when None (then ``adata`` needs no ``X`` given ``scores`` and
    ``expression``).

    Writes obs columns ``{key_added}`` (cluster-level label), ``{key_added}_cell``,
    ``{key_added}_cell_margin``, ``{key_added}_margin`` and
    ``{key_added}_fraction_agreeing``. Returns ``(per_cell, per_cluster)``: per_cell has
    those columns plus ``score_<set>``; per_cluster has ``CLUSTER_COLUMNS``.
    """
    if cluster_key not in adata.obs:
        raise KeyError(f"cluster column {cluster_key!r} not in adata.obs: cluster first")
    tissues = None
    if tissue_key is not None and tissue_key in adata.obs:
        tissues = adata.obs[tissue_key].astype(str)
    sets, not_present = _present_sets(marker_sets, adata.var_names)
    left_out = {**(unusable or {}), **not_present}
    candidate_labels(list(sets), tissues.unique() if tissues is not None else [""],
                     left_out, excluded)
    if scores is None:
        fn = score_fn or _default_score_fn()
        scores = fn(adata, sets, method=method, layer=layer, random_state=random_state)
    scores = scores.loc[adata.obs_names, list(sets)]
    cells = label_cells(scores, tissues, excluded=excluded, min_score=min_score)
    clusters = adata.obs[cluster_key].astype(str)
    per_cluster = decide_clusters(
        scores, cells["label"], clusters, tissues, excluded=excluded, min_score=min_score,
        min_margin=min_margin, min_fraction=min_fraction,
    )
    tissue_str = tissues if tissues is not None else pd.Series("", index=adata.obs_names)
    group = cluster_groups(adata.obs, cluster_key, None if tissues is None else tissue_key)
    if expression is None:
        expression = GroupExpression.from_matrix(_matrix(adata, layer), group)
    expressed = markers_expressed(expression, adata.var_names, sets, marker_min_cells)
    per_cluster = apply_marker_floor(per_cluster, expressed, sets, min_markers_expressed,
                                     min_marker_genes_expressed)
    log_unassigned(per_cluster, left_out)
    tops = top_genes(expression, adata.var_names, n_top_genes)
    group_keys = per_cluster["cluster"] + "|" + per_cluster["tissue"]
    per_cluster["top_marker_genes"] = [",".join(tops.get(k, [])) for k in group_keys]
    per_cluster = per_cluster[CLUSTER_COLUMNS]
    lookup = per_cluster.set_index(per_cluster["cluster"] + "|" + per_cluster["tissue"])
    per_cell = pd.DataFrame({
        "cluster": clusters,
        "tissue": tissue_str,
        key_added: lookup.loc[group, "label"].to_numpy(),
        f"{key_added}_cell": cells["label"],
        f"{key_added}_cell_margin": cells["margin"],
        f"{key_added}_margin": lookup.loc[group, "margin"].to_numpy(),
        f"{key_added}_fraction_agreeing": lookup.loc[group, "fraction_agreeing"].to_numpy(),
    }, index=adata.obs_names)
    for col in per_cell.columns[2:]:
        adata.obs[col] = per_cell[col]
    adata.obs[key_added] = adata.obs[key_added].astype("category")
    per_cell = per_cell.join(scores.add_prefix("score_"))
    return per_cell, per_cluster


def marker_dotplot_data(
    adata: AnnData,
    marker_sets: Mapping[str, Sequence[str] | Mapping[str, float]],
    groupby: str = "celltype",
    *,
    layer: str | None = None,
) -> pd.DataFrame:
    """Long table for a dot plot of marker sets by label (:func:`dotplot_data` of the
    groups in ``adata.obs[groupby]``)."""
    if groupby not in adata.obs:
        raise KeyError(f"{groupby!r} not in adata.obs: run annotate() first")
    genes = _marker_genes(marker_sets, adata.var_names)
    expression = GroupExpression.from_matrix(_matrix(adata[:, genes], layer),
                                             adata.obs[groupby])
    return dotplot_data(expression, genes, marker_sets)


def _marker_genes(marker_sets: Mapping[str, Sequence[str] | Mapping[str, float]],
                  var_names: Sequence[str]) -> list[str]:
    """The marker genes present in the data, in set order, each once."""
    present = pd.Index(var_names)
    genes = list(dict.fromkeys(g for m in marker_sets.values() for g in m if g in present))
    if not genes:
        raise ValueError("no marker gene is present in the data")
    return genes


def dotplot_data(expression: GroupExpression, var_names: Sequence[str],
                 marker_sets: Mapping[str, Sequence[str] | Mapping[str, float]]
                 ) -> pd.DataFrame:
    """One row per (group, set, gene present in the data) with mean_expression,
    fraction_expressing (> 0) and n_cells of the group."""
    col = {g: j for j, g in enumerate(var_names)}
    pairs = [(s, g) for s, genes in marker_sets.items() for g in genes if g in col]
    if not pairs:
        raise ValueError("no marker gene is present in the data")
    means, fractions = expression.means(), expression.fractions()
    rows = [
        {"group": group, "set": s, "gene": g, "mean_expression": float(means[i, col[g]]),
         "fraction_expressing": float(fractions[i, col[g]]),
         "n_cells": int(expression.sizes[i])}
        for i, group in enumerate(expression.groups) for s, g in pairs
    ]
    return pd.DataFrame(rows)


SOURCE_COLUMNS = {"markers": "cell_type_markers", "published": "cell_type_published",
                  "reference": "cell_type_reference"}


def annotate_stage(adata: AnnData, marker_sets: Mapping[str, Sequence[str] | Mapping[str, float]],
                   marker_scores: pd.DataFrame, programme_scores: pd.DataFrame,
                   settings: AnnotationSettings, *, cluster_key: str,
                   dropped_markers: Mapping[str, str] | None = None,
                   expression: GroupExpression | None = None,
                   published: pd.Series | None = None,
                   reference: pd.DataFrame | None = None,
                   ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The annotation stage: label clusters from the marker scores of the scoring stage,
    add the programme scores to obs as ``score_<set>``, and return (per-cell table,
    per-cluster table, marker dot-plot data). ``adata`` gains ``cell_type`` and friends.
    ``dropped_markers`` (set -> reason, from the gene-set library) are reported as labels
    left out. ``expression``: the clusters' expression (:func:`cluster_groups`), e.g.
    combined from per-sample jobs; then ``adata`` needs only obs and var names.

    The marker labels are kept as ``cell_type_markers``; ``published`` (the mapped
    published labels, :func:`mscflow.annotate.published.published_labels`) as
    ``cell_type_published`` and ``reference`` (celltypist predictions,
    :func:`mscflow.annotate.reference.predict_reference`) as ``cell_type_reference*``.
    ``cell_type`` is the one ``settings.source`` names."""
    if expression is None:
        expression = GroupExpression.from_matrix(adata.X, cluster_groups(adata.obs, cluster_key))
    per_cell, per_cluster = annotate(
        adata, marker_sets, cluster_key=cluster_key, tissue_key="tissue",
        scores=marker_scores, min_margin=settings.min_margin,
        min_fraction=settings.min_fraction,
        min_markers_expressed=settings.min_markers_expressed,
        min_marker_genes_expressed=settings.min_marker_genes_expressed,
        marker_min_cells=settings.marker_min_cells, key_added="cell_type",
        unusable=dropped_markers, expression=expression,
    )
    for column in programme_scores.columns:
        adata.obs[f"score_{column}"] = programme_scores.loc[adata.obs_names, column].to_numpy()
    labels = dict(zip(per_cluster["cluster"] + "|" + per_cluster["tissue"],
                      per_cluster["label"], strict=True))
    dot = dotplot_data(expression.regroup(labels), adata.var_names, marker_sets)
    sources = {"markers": adata.obs["cell_type"].astype(str)}
    if published is not None:
        sources["published"] = published.loc[adata.obs_names].astype(str)
    extra = {}
    if reference is not None:
        extra = {c: reference.loc[adata.obs_names, c] for c in reference.columns}
        sources["reference"] = reference.loc[adata.obs_names, "cell_type_reference"].astype(str)
    if settings.source not in sources:
        raise InputDataError(f"annotation.source is {settings.source} but the stage was given "
                             f"no {settings.source} labels")
    for source, values in sources.items():
        adata.obs[SOURCE_COLUMNS[source]] = pd.Categorical(values)
        per_cell[SOURCE_COLUMNS[source]] = values.to_numpy()
    for column, values in extra.items():
        adata.obs[column] = values.to_numpy()
        per_cell[column] = values.to_numpy()
    chosen = sources[settings.source]
    adata.obs["cell_type"] = pd.Categorical(chosen)
    per_cell["cell_type"] = chosen.to_numpy()
    if settings.source != "markers":
        log.info("annotation: cell_type from the %s labels (%d types); the marker labels are "
                 "kept as cell_type_markers", settings.source, chosen.nunique())
    per_cell.index.name = "cell"
    return per_cell, per_cluster, dot
