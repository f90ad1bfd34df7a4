"""Monocyte -> macrophage trajectories per tissue: PAGA, diffusion pseudotime, programme
dynamics along pseudotime and the condition shift along it (samples as replicates).

Policy, in the order the stage applies it (settings: config ``trajectory``, config/README.md):

* **Lineage**: a tissue's cells whose cluster label is a ``trunk`` label (monocytes) or ends
  one of the ``branches`` (MoMF and interstitial macrophages; Kupffer cells; alveolar
  macrophages). A cell's ``branch`` is ``trunk`` or its branch; a branch's summaries and
  tests use the trunk's cells plus its own.
* **Graph**: exact kNN (``n_neighbors``, umap or Gaussian ``kernel``) recomputed on the
  representation the run's graph used (``uns['neighbors']['params']['use_rep']``, e.g.
  ``X_pca_harmony``; else ``X_pca`` with the run's ``n_pcs``) or on ``use_rep``; a graph the
  integration built itself (BBKNN) is restricted to the subset instead. Only the root's
  connected component gets a pseudotime; the tissue table counts the others.
* **Root**: the ``root_label`` cell with the highest root marker score minus the highest
  branch-label marker score (``marker_scores.parquet``): the most monocyte-like, least
  macrophage-like cell (ties: first in file order), or ``root_cells[tissue]``. A tissue
  without ``root_label`` cells or with fewer than ``min_cells`` connected lineage cells is
  skipped with a note.
* **PAGA** on the run's clusters (or Leiden at ``cluster_resolution``), **diffusion map**
  and **DPT** (``n_dcs``) from the root with scanpy; ``pseudotime`` is ``dpt_pseudotime``.
* **Along pseudotime**: ``n_bins`` equal-count bins per tissue and branch; a sample's bin
  mean needs ``min_cells_per_bin`` cells; a condition's is the mean of its samples'.
* **Condition shift**: per sample and branch the median pseudotime and the fraction beyond
  the branch's ``late_quantile`` quantile, tested by :func:`mscflow.contrast.replicate_tests`;
  contrasts of skipped tissues or branches get ``skipped`` rows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mscflow import job
from mscflow.cluster.core import cache_umap_kernels
from mscflow.config import Settings, runtime_field, settings_section
from mscflow.contrast import (
    STATUS_SKIPPED,
    ContrastSettings,
    contrast_designs,
    parse_contrasts,
    replicate_tests,
)
from mscflow.errors import ConfigError, InputDataError
from mscflow.inputs.samplesheet import read_sample_sheet

__all__ = ["TRUNK", "TissueTrajectory", "TrajectorySettings", "branch_cells", "cell_table",
           "check_trajectory_config", "choose_root", "combined_h5ad", "paga_edges",
           "per_sample_pseudotime", "programme_bins", "read_lineage", "root_scores",
           "shifts_stage", "subset_graph", "tissue_table", "tissue_trajectory", "trajectories",
           "trajectory_shifts", "trajectory_stage"]

log = logging.getLogger(__name__)

TRUNK = "trunk"
METRICS = ("median_pseudotime", "frac_late")
PathLike = str | Path


@settings_section("trajectory")
class TrajectorySettings(Settings):
    """Config section ``trajectory`` (keys, types and defaults in the schema;
    config/README.md), plus the run's seed and the job's threads."""

    random_state: int = runtime_field()
    n_jobs: int = runtime_field()

    def __post_init__(self) -> None:
        if self.root_label not in self.trunk:
            raise ConfigError(
                f"trajectory.root_label '{self.root_label}' is not one of trajectory.trunk "
                f"{list(self.trunk)}; the root must sit in the trunk (add it there or pick "
                "a trunk label)")
        seen: dict[str, str] = dict.fromkeys(self.trunk, "trunk")
        for name, labels in self.branches.items():
            if name == TRUNK:
                raise ConfigError(f"trajectory.branches: '{TRUNK}' names the shared start; "
                                  "give the branch another name")
            for label in labels:
                if label in seen:
                    raise ConfigError(
                        f"trajectory: label '{label}' is in both {seen[label]} and branch "
                        f"'{name}'; a label belongs to one part of the lineage")
                seen[label] = f"branch '{name}'"

    @property
    def labels(self) -> list[str]:
        """Every lineage label: trunk first, then the branches' labels."""
        return [*self.trunk, *(lab for labels in self.branches.values() for lab in labels)]

    def branch_of(self, labels: pd.Series) -> pd.Series:
        """``trunk`` or the branch name for each cell label (NaN outside the lineage)."""
        lookup = {**dict.fromkeys(self.trunk, TRUNK),
                  **{lab: name for name, labs in self.branches.items() for lab in labs}}
        return labels.astype(str).map(lookup)


def check_trajectory_config(section: Mapping, samples: pd.DataFrame) -> TrajectorySettings:
    """Settings checked against the sample sheet before any job runs: ``tissues`` and the
    tissues of ``root_cells`` must be tissues of the sheet."""
    settings = TrajectorySettings.from_config(section, random_state=0, n_jobs=1)
    sheet = sorted(samples["tissue"].astype(str).unique())
    for key, names in (("tissues", settings.tissues), ("root_cells", settings.root_cells)):
        unknown = sorted(set(names) - set(sheet))
        if unknown:
            raise ConfigError(f"trajectory.{key} names tissue(s) {unknown} that the sample "
                              f"sheet does not have (tissues: {sheet}); fix the names")
    return settings


# ------------------------------------------------------------------------------ reading


def read_lineage(h5ad: PathLike, settings: TrajectorySettings) -> tuple[Any, pd.DataFrame]:
    """The lineage cells of the analysed tissues from an annotated h5ad, reading only their
    rows of ``X`` and ``obsm`` (the file may hold far more cells) and, when the integration
    built the graph (BBKNN), of the graph; returns ``(subset, obs of every cell)``. The
    run's ``uns['neighbors']['params']`` and ``uns['integration']`` are kept in the subset's
    ``uns['run_neighbors']`` and ``uns['run_integration']``."""
    import anndata as ad
    import h5py
    from anndata.io import read_elem, sparse_dataset

    with h5py.File(h5ad, "r") as f:
        obs = read_elem(f["obs"])
        need = [c for c in ("cell_type", "tissue", "sample", "condition") if c not in obs]
        if need:
            raise InputDataError(f"{h5ad}: obs lacks column(s) {need}; run the annotation "
                                 "stage first (rule annotate)")
        keep = obs["cell_type"].astype(str).isin(settings.labels).to_numpy()
        if settings.tissues:
            keep &= obs["tissue"].astype(str).isin(settings.tissues).to_numpy()
        rows = np.flatnonzero(keep)
        x = f["X"]
        matrix = sparse_dataset(x)[rows] if isinstance(x, h5py.Group) else x[rows]
        obsm = {k: np.asarray(read_elem(f["obsm"][k]))[rows] for k in f["obsm"]}
        params = read_elem(f["uns/neighbors/params"]) if "uns/neighbors/params" in f else {}
        integration = read_elem(f["uns/integration"]) if "uns/integration" in f else {}
        obsp = {}
        if integration.get("graph_built") and settings.use_rep is None:  # BBKNN's graph
            obsp = {k: read_elem(f["obsp"][k])[rows][:, rows] for k in ("connectivities",
                                                                         "distances")}
        sub = ad.AnnData(matrix, obs=obs.iloc[rows].copy(), var=read_elem(f["var"]),
                         obsm=obsm, obsp=obsp, uns={"run_neighbors": {"params": params},
                                                    "run_integration": integration})
    return sub, obs


def subset_graph(sub: Any, settings: TrajectorySettings) -> str:
    """Give ``sub`` its neighbour graph; returns what it was built on. The run's graph
    restricted to the subset when the integration built it (BBKNN: no embedding to rebuild
    it from; read by :func:`read_lineage` unless ``use_rep`` is set), else an exact kNN
    graph on ``use_rep``, the run's ``use_rep`` or ``X_pca`` (with the run's ``n_pcs``)."""
    params = dict(sub.uns["run_neighbors"]["params"])
    if "connectivities" in sub.obsp:
        sub.uns["neighbors"] = {"connectivities_key": "connectivities",
                                "distances_key": "distances", "params": params}
        return f"run graph ({sub.uns['run_integration']['method']}) restricted to the subset"
    rep = settings.use_rep or str(params.pop("use_rep", "X_pca"))
    if rep not in sub.obsm:
        raise InputDataError(
            f"representation '{rep}' is not in obsm (has {sorted(sub.obsm)}); "
            + ("fix trajectory.use_rep" if settings.use_rep else
               "the annotated h5ad does not match its neighbour graph; rerun the clustering"))
    n_pcs = params.get("n_pcs") if rep == "X_pca" else None
    _neighbours(sub, rep, None if n_pcs is None else int(n_pcs), settings)
    return rep


# -------------------------------------------------------------------------------- roots


def root_scores(obs: pd.DataFrame, marker_scores: pd.DataFrame,
                settings: TrajectorySettings) -> pd.Series:
    """Root marker score minus the highest marker score of the branch labels, per cell of
    ``obs`` (branch labels without a marker set are left out)."""
    missing = obs.index.difference(marker_scores.index)
    if len(missing):
        raise InputDataError(f"marker scores lack {len(missing)} cell(s), e.g. "
                             f"{list(missing[:3])}; rerun the scoring (rules score_sample, "
                             "gather_scores)")
    if settings.root_label not in marker_scores:
        raise ConfigError(f"trajectory.root_label '{settings.root_label}' has no marker set "
                          f"(marker sets: {list(marker_scores.columns)}); use a label of "
                          "the marker GMT")
    scores = marker_scores.loc[obs.index]
    away = [lab for labs in settings.branches.values() for lab in labs if lab in scores]
    root = scores[settings.root_label].astype(float)
    return root - scores[away].max(axis=1) if away else root


@dataclass(frozen=True)
class RootChoice:
    """The root cell of a tissue's trajectory and how it was chosen."""

    cell: str
    score: float
    how: str  # "auto" or "config"


def choose_root(obs: pd.DataFrame, marker_scores: pd.DataFrame, settings: TrajectorySettings,
                tissue: str) -> RootChoice:
    """The root of ``tissue`` among the lineage cells ``obs`` (see the module docstring)."""
    score = root_scores(obs, marker_scores, settings)
    if tissue in settings.root_cells:
        cell = settings.root_cells[tissue]
        if cell not in obs.index:
            raise ConfigError(f"trajectory.root_cells.{tissue}: cell '{cell}' is not a lineage "
                              f"cell of tissue '{tissue}' (labels {settings.labels}); use a "
                              "cell id of results/annotate/cell_types.tsv.gz")
        return RootChoice(cell, float(score[cell]), "config")
    candidates = score[obs["cell_type"].astype(str) == settings.root_label]
    cell = str(candidates.index[int(np.argmax(candidates.to_numpy()))])
    return RootChoice(cell, float(candidates[cell]), "auto")


# ----------------------------------------------------------------------- one tissue


@dataclass
class TissueTrajectory:
    """A tissue's trajectory: ``adata`` holds the cells connected to the root (pseudotime,
    branch, PAGA in ``uns['paga']``), or ``None`` when the tissue was skipped (``note``)."""

    tissue: str
    n_lineage: int
    labels: dict[str, int]
    status: str = "skipped"
    note: str = ""
    root: RootChoice | None = None
    use_rep: str = ""
    n_connected: int = 0
    adata: Any = None
    all_cells: pd.DataFrame = field(default_factory=pd.DataFrame)


def _neighbours(sub: Any, rep: str, n_pcs: int | None, settings: TrajectorySettings) -> None:
    """Exact kNN graph of the subset on ``rep``, weighted by ``kernel``: ``umap`` (the
    kernel of the run's graph) or ``gauss``, the adaptive Gaussian kernel of the original
    DPT (Haghverdi et al. 2016), which needs no umap-learn (its import compiles
    pynndescent: ~20 s of CPU per process)."""
    import scanpy as sc
    from sklearn.neighbors import KNeighborsTransformer

    if settings.kernel == "umap":

        cache_umap_kernels()
    k = min(settings.n_neighbors, sub.n_obs - 1)
    transformer = KNeighborsTransformer(n_neighbors=k, algorithm="brute", n_jobs=settings.n_jobs)
    sc.pp.neighbors(sub, n_neighbors=k, use_rep=rep, n_pcs=n_pcs, transformer=transformer,
                    method=settings.kernel, random_state=settings.random_state)


def _paga_groups(comp: Any, cluster_key: str, settings: TrajectorySettings) -> pd.Categorical:
    """PAGA groups: the run's clusters, or Leiden on the subset at ``cluster_resolution``."""
    import scanpy as sc

    if settings.cluster_resolution is None:
        if cluster_key not in comp.obs:
            raise InputDataError(f"cluster column '{cluster_key}' is not in obs; rerun the "
                                 "clustering")
        return pd.Categorical(comp.obs[cluster_key].astype(str))
    sc.tl.leiden(comp, resolution=settings.cluster_resolution, key_added="_leiden",
                 flavor="igraph", n_iterations=2, directed=False,
                 random_state=settings.random_state)
    return pd.Categorical(comp.obs.pop("_leiden").astype(str))


def _paga(comp: Any) -> None:
    """``sc.tl.paga`` on ``paga_group``; a lineage in one group has no edges to abstract
    (igraph cannot build an edgeless adjacency), so it gets a 1 x 1 graph without edges."""
    import scanpy as sc
    from scipy import sparse

    if comp.obs["paga_group"].nunique() > 1:
        sc.tl.paga(comp, groups="paga_group")
        return
    comp.obs["paga_group"] = comp.obs["paga_group"].astype(str).astype("category")
    empty = sparse.csr_matrix((1, 1))
    comp.uns["paga"] = {"connectivities": empty, "connectivities_tree": empty.copy(),
                        "groups": "paga_group"}


def tissue_trajectory(sub: Any, tissue: str, marker_scores: pd.DataFrame,
                      settings: TrajectorySettings, cluster_key: str) -> TissueTrajectory:
    """PAGA, diffusion map and DPT of one tissue's lineage cells ``sub`` (skipped with a
    note when the root label is absent or too few cells are connected to the root)."""
    import scanpy as sc
    from scipy.sparse.csgraph import connected_components

    labels = sub.obs["cell_type"].astype(str)
    out = TissueTrajectory(tissue, sub.n_obs, labels.value_counts().sort_index().to_dict())
    out.all_cells = sub.obs[["sample", "condition", "cell_type"]].assign(
        tissue=tissue, branch=settings.branch_of(labels))
    if settings.root_label not in out.labels:
        out.note = (f"root label '{settings.root_label}' absent from tissue '{tissue}' "
                    f"(lineage labels there: {sorted(out.labels) or 'none'})")
        return out
    if sub.n_obs < settings.min_cells:
        out.note = (f"{sub.n_obs} lineage cells in tissue '{tissue}' (need >= "
                    f"trajectory.min_cells = {settings.min_cells})")
        return out
    out.root = choose_root(sub.obs, marker_scores, settings, tissue)
    with job.timed(f"{tissue}: neighbours"):
        out.use_rep = subset_graph(sub, settings)
    _, component = connected_components(sub.obsp["connectivities"], directed=False)
    in_root = component == component[sub.obs_names.get_loc(out.root.cell)]
    out.n_connected = int(in_root.sum())
    if out.n_connected < settings.min_cells:
        out.note = (f"{out.n_connected} lineage cells of tissue '{tissue}' are connected to "
                    f"the root (need >= trajectory.min_cells = {settings.min_cells})")
        return out
    comp = sub[in_root].copy()
    comp.obs["paga_group"] = _paga_groups(comp, cluster_key, settings)
    comp.obs["branch"] = settings.branch_of(comp.obs["cell_type"]).astype("category")
    with job.timed(f"{tissue}: PAGA, diffusion map, DPT"):
        _paga(comp)
        n_comps = min(max(15, settings.n_dcs), comp.n_obs - 2)
        sc.tl.diffmap(comp, n_comps=n_comps, random_state=settings.random_state)
        comp.uns["iroot"] = int(comp.obs_names.get_loc(out.root.cell))
        sc.tl.dpt(comp, n_dcs=min(settings.n_dcs, n_comps))
    if "dpt_pseudotime" not in comp.obs:  # scanpy only warns when it has no root
        raise RuntimeError(f"{tissue}: scanpy's dpt wrote no pseudotime (root not set)")
    pseudotime = comp.obs.pop("dpt_pseudotime").astype(float)
    comp.obs["pseudotime"] = pseudotime.where(np.isfinite(pseudotime))
    comp.obs["is_root"] = comp.obs_names == out.root.cell
    out.adata, out.status = comp, "computed"
    if out.n_connected < sub.n_obs:
        out.note = (f"{sub.n_obs - out.n_connected} lineage cell(s) not connected to the "
                    "root have no pseudotime")
    return out


def trajectories(sub: Any, marker_scores: pd.DataFrame, settings: TrajectorySettings,
                 cluster_key: str, tissues: Sequence[str]) -> list[TissueTrajectory]:
    """:func:`tissue_trajectory` for each tissue (in order) on its cells of ``sub``."""
    results = []
    for tissue in tissues:
        cells = sub[sub.obs["tissue"].astype(str).to_numpy() == tissue].copy()
        result = tissue_trajectory(cells, tissue, marker_scores, settings, cluster_key)
        if result.status == "computed":
            log.info("%s: root %s (%s, score %.3f), %d of %d lineage cells connected",
                     tissue, result.root.cell, result.root.how, result.root.score,
                     result.n_connected, result.n_lineage)
        else:
            log.warning("%s: trajectory skipped: %s", tissue, result.note)
        results.append(result)
    return results


# ------------------------------------------------------------------------------- tables


def cell_table(results: Sequence[TissueTrajectory]) -> pd.DataFrame:
    """Per lineage cell: tissue, sample, condition, cell_type, branch, paga_group,
    pseudotime (NaN when skipped or not connected), is_root, DC1, DC2."""
    columns = ["tissue", "sample", "condition", "cell_type", "branch", "paga_group",
               "pseudotime", "is_root", "dc1", "dc2"]
    frames = []
    for r in results:
        computed = pd.DataFrame(columns=columns[5:], dtype=float)
        if r.adata is not None:
            obs, dm = r.adata.obs, r.adata.obsm["X_diffmap"]
            computed = pd.DataFrame({
                "paga_group": obs["paga_group"].astype(str), "pseudotime": obs["pseudotime"],
                "is_root": obs["is_root"], "dc1": dm[:, 1], "dc2": dm[:, 2]}, index=obs.index)
        frames.append(r.all_cells.join(computed))
    if not frames:
        return pd.DataFrame(columns=columns, index=pd.Index([], name="cell"))
    table = pd.concat(frames)[columns]
    table["is_root"] = table["is_root"].astype("boolean").fillna(False).astype(bool)
    for col in ("tissue", "sample", "condition", "cell_type", "branch"):
        table[col] = table[col].astype(str)
    for col in ("pseudotime", "dc1", "dc2"):
        table[col] = table[col].astype(float)
    table.index.name = "cell"
    return table


def tissue_table(results: Sequence[TissueTrajectory]) -> pd.DataFrame:
    """One row per tissue: status, cells, root (cell, how chosen, score), representation,
    PAGA groups, lineage labels with their cell counts and the note."""
    return pd.DataFrame([{
        "tissue": r.tissue, "status": r.status, "n_lineage_cells": r.n_lineage,
        "n_connected": r.n_connected, "root_cell": r.root.cell if r.root else "",
        "root_choice": r.root.how if r.root else "",
        "root_score": r.root.score if r.root else np.nan, "use_rep": r.use_rep,
        "n_paga_groups": 0 if r.adata is None else r.adata.obs["paga_group"].nunique(),
        "labels": ", ".join(f"{k} ({v})" for k, v in r.labels.items()), "note": r.note,
    } for r in results])


def paga_edges(results: Sequence[TissueTrajectory]) -> pd.DataFrame:
    """PAGA edges per tissue: groups (with majority label and size), connectivity, and
    whether the edge is in PAGA's spanning tree."""
    rows = []
    for r in results:
        if r.adata is None:
            continue
        paga, obs = r.adata.uns["paga"], r.adata.obs
        groups = list(obs["paga_group"].cat.categories)
        major = obs.groupby("paga_group", observed=False)["cell_type"].agg(
            lambda s: s.astype(str).value_counts().index[0] if len(s) else "")
        size = obs["paga_group"].value_counts()
        conn, tree = paga["connectivities"].tocoo(), paga["connectivities_tree"].tocsr()
        for i, j, value in zip(conn.row, conn.col, conn.data, strict=True):
            if i < j:
                a, b = groups[i], groups[j]
                rows.append({"tissue": r.tissue, "group_a": a, "group_b": b,
                             "label_a": major[a], "label_b": major[b], "cells_a": int(size[a]),
                             "cells_b": int(size[b]), "connectivity": float(value),
                             "in_tree": bool(tree[i, j] or tree[j, i])})
    columns = ["tissue", "group_a", "group_b", "label_a", "label_b", "cells_a", "cells_b",
               "connectivity", "in_tree"]
    return pd.DataFrame(rows, columns=columns)


def combined_h5ad(results: Sequence[TissueTrajectory]) -> Any:
    """The computed tissues' cells in one AnnData: log-normalised ``X``, obs with
    ``pseudotime``, ``branch``, ``paga_group``, ``is_root``; obsm ``X_umap`` (the run's)
    and ``X_diffmap`` (per tissue); obsp the subsets' graphs (block-diagonal); per tissue
    ``uns['trajectory'][tissue]`` = PAGA, root, representation, diffusion eigenvalues."""
    import anndata as ad

    parts = [r for r in results if r.adata is not None]
    if not parts:
        return ad.AnnData(obs=pd.DataFrame(columns=["tissue", "pseudotime", "branch"],
                                           index=pd.Index([], dtype=str)))
    width = max(r.adata.obsm["X_diffmap"].shape[1] for r in parts)
    uns = {}
    for r in parts:
        dm = r.adata.obsm["X_diffmap"]
        pad = np.full((dm.shape[0], width - dm.shape[1]), np.nan)
        r.adata.obsm["X_diffmap"] = np.hstack([dm, pad])
        paga = r.adata.uns["paga"]
        uns[r.tissue] = {
            "paga": {"connectivities": paga["connectivities"],
                     "connectivities_tree": paga["connectivities_tree"],
                     "groups": list(r.adata.obs["paga_group"].cat.categories)},
            "root_cell": r.root.cell, "root_choice": r.root.how, "root_score": r.root.score,
            "use_rep": r.use_rep, "diffmap_evals": np.asarray(r.adata.uns["diffmap_evals"]),
        }
    merged = ad.concat([r.adata for r in parts], merge="same", pairwise=True)
    for col in ("paga_group", "branch", "tissue", "sample", "condition", "cell_type"):
        merged.obs[col] = merged.obs[col].astype(str).astype("category")
    merged.uns["trajectory"] = uns
    return merged


# ------------------------------------------------------------------ along pseudotime


def branch_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells with a pseudotime, once per branch they belong to: the trunk cells of a tissue
    in every branch of it, a branch's cells in their own. Column ``branch`` is the branch."""
    timed = cells[cells["pseudotime"].notna()]
    frames = []
    for _, part in timed.groupby("tissue", sort=True):
        trunk = part[part["branch"] == TRUNK]
        for name in sorted(set(part["branch"]) - {TRUNK}):
            frames.append(pd.concat([trunk, part[part["branch"] == name]]).assign(branch=name))
    return pd.concat(frames) if frames else timed.iloc[:0]


def per_sample_pseudotime(paths: pd.DataFrame, late_quantile: float) -> pd.DataFrame:
    """Per tissue, branch and sample: ``n_cells``, ``median_pseudotime`` and ``frac_late``
    (fraction beyond the branch's ``late_quantile`` quantile, ``late_threshold``)."""
    rows = []
    for (tissue, branch), part in paths.groupby(["tissue", "branch"], sort=True):
        threshold = float(part["pseudotime"].quantile(late_quantile))
        for sample, cells in part.groupby("sample", sort=True):
            pt = cells["pseudotime"]
            rows.append({"tissue": tissue, "branch": branch, "sample": sample,
                         "condition": cells["condition"].iloc[0], "n_cells": len(cells),
                         "median_pseudotime": float(pt.median()),
                         "frac_late": float((pt > threshold).mean()),
                         "late_threshold": threshold})
    return pd.DataFrame(rows, columns=["tissue", "branch", "sample", "condition", "n_cells",
                                       *METRICS, "late_threshold"])


def programme_bins(paths: pd.DataFrame, scores: pd.DataFrame, settings: TrajectorySettings
                   ) -> pd.DataFrame:
    """Programme scores along pseudotime, per tissue x branch x equal-count bin x set: one
    row per sample (mean over its cells, NaN below ``min_cells_per_bin``) and one per
    condition (mean of its samples' means; ``n_samples`` of them). A bin spans pseudotimes
    ``pt_low``-``pt_high`` (median ``pt_mid``) and ranks around ``rank_mid`` (0-1)."""
    frames = []
    sets = list(scores.columns)
    for (tissue, branch), part in paths.groupby(["tissue", "branch"], sort=True):
        n_bins = min(settings.n_bins, len(part))
        bins = pd.qcut(part["pseudotime"].rank(method="first"), n_bins, labels=False)
        part = part.assign(bin=bins.to_numpy())
        values = scores.loc[part.index, sets].set_axis(part.index)
        data = pd.concat([part[["sample", "condition", "bin", "pseudotime"]], values], axis=1)
        edges = data.groupby("bin")["pseudotime"].agg(pt_low="min", pt_high="max",
                                                      pt_mid="median")
        edges["rank_mid"] = (edges.index + 0.5) / n_bins
        grouped = data.groupby(["bin", "condition", "sample"], sort=True)
        means = grouped[sets].mean().melt(ignore_index=False, var_name="gene_set",
                                          value_name="mean").reset_index()
        means["n_cells"] = grouped.size().reindex(
            pd.MultiIndex.from_frame(means[["bin", "condition", "sample"]])).to_numpy()
        means.loc[means["n_cells"] < settings.min_cells_per_bin, "mean"] = np.nan
        cond = means.groupby(["bin", "condition", "gene_set"], sort=True).agg(
            mean=("mean", "mean"), n_samples=("mean", "count"), n_cells=("n_cells", "sum"))
        cond = cond.reset_index().assign(level="condition", sample="")
        means = means.assign(level="sample", n_samples=1)
        both = pd.concat([cond, means], ignore_index=True).join(edges, on="bin")
        frames.append(both.assign(tissue=tissue, branch=branch))
    columns = ["tissue", "branch", "gene_set", "bin", "rank_mid", "pt_low", "pt_high",
               "pt_mid", "level", "condition", "sample", "n_samples", "n_cells", "mean"]
    if not frames:
        return pd.DataFrame(columns=columns)
    out = pd.concat(frames, ignore_index=True)[columns]
    return out.sort_values(["tissue", "branch", "gene_set", "level", "condition", "sample",
                            "bin"], kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------- condition shift


def trajectory_shifts(cells: pd.DataFrame, tissues: pd.DataFrame, samples: pd.DataFrame,
                      contrasts: Sequence[Any], contrast_settings: Any,
                      settings: TrajectorySettings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per contrast x branch x metric (median_pseudotime, frac_late): the shift between
    conditions with the samples of the sheet as replicates (:func:`replicate_tests`);
    branches or tissues without pseudotimes get ``skipped`` rows naming the reason.
    Returns (tests, per-sample values)."""

    per_sample = per_sample_pseudotime(branch_cells(cells), settings.late_quantile)
    sheet = samples.copy()
    sheet.index = sheet.index.astype(str)
    designs = list(contrast_designs(pd.DataFrame({"sample": sheet.index}), sheet, contrasts,
                                    contrast_settings.min_samples_per_group))
    table = replicate_tests(per_sample, designs, contrast_settings, units=("branch",),
                            metrics=METRICS)
    extra = [row for cd in designs
             for row in _untested_rows(cd, cells, per_sample, tissues, contrast_settings,
                                       settings)]
    if extra:
        table = pd.concat([table, pd.DataFrame(extra)], ignore_index=True)[table.columns]
    table["significant"] = table["significant"].astype(bool)
    return table, per_sample


def _untested_rows(cd: Any, cells: pd.DataFrame, per_sample: pd.DataFrame,
                   tissues: pd.DataFrame, contrast_settings: Any,
                   settings: TrajectorySettings) -> list[dict]:
    """``skipped`` rows of one contrast: its tissue has no trajectory, or a branch of the
    tissue has cells but none with a pseudotime."""

    tissue = cd.contrast.tissue
    status = tissues.set_index("tissue")
    notes: dict[str, str] = {}
    if tissue not in status.index:
        notes[""] = f"tissue '{tissue}' is not among trajectory.tissues {list(settings.tissues)}"
    elif status.loc[tissue, "status"] != "computed":
        notes[""] = f"trajectory of tissue '{tissue}' skipped: {status.loc[tissue, 'note']}"
    else:
        here = cells[cells["tissue"] == tissue]
        tested = set(per_sample.loc[per_sample["tissue"] == tissue, "branch"])
        counts = here.loc[here["branch"] != TRUNK, "branch"].value_counts()
        for branch, n in counts.sort_index().items():
            if branch not in tested:
                notes[branch] = (f"branch '{branch}' of tissue '{tissue}': none of its {n} "
                                 "cells is connected to the root in the kNN graph")
        if counts.empty:
            notes[""] = (f"tissue '{tissue}' has trunk cells only (no cells of branches "
                         f"{sorted(settings.branches)})")
    return [{**cd.labels, "branch": branch, "metric": metric,
             "test": contrast_settings.score_test, "covariates": cd.covariates,
             "significant": False, "status": STATUS_SKIPPED, "note": note}
            for branch, note in notes.items() for metric in METRICS]


# ------------------------------------------------------------------------------ stages


def trajectory_stage(h5ad: PathLike, marker_scores: PathLike, settings: TrajectorySettings,
                     *, cluster_key: str) -> dict[str, Any]:
    """Rule trajectory: read the lineage cells, compute every tissue's trajectory and
    return ``{output: object}`` for outputs ``h5ad``, ``cells`` (parquet) and ``cells_tsv``
    (the per-cell table), ``tissues``, ``edges``, ``bins``."""
    with job.timed("read lineage cells"):
        sub, obs = read_lineage(h5ad, settings)
        scores = pd.read_parquet(marker_scores)
    tissues = list(settings.tissues) or sorted(obs["tissue"].astype(str).unique())
    log.info("lineage: %d of %d cells in tissue(s) %s", sub.n_obs, len(obs), tissues)
    results = trajectories(sub, scores, settings, cluster_key, tissues)
    cells = cell_table(results)
    programme = [c for c in sub.obs.columns if str(c).startswith("score_")]
    with job.timed("programme bins"):
        bins = programme_bins(branch_cells(cells), sub.obs[programme].rename(
            columns=lambda c: c[len("score_"):]), settings)
    table = cells.reset_index()
    return {"h5ad": combined_h5ad(results), "cells": table, "cells_tsv": table,
            "tissues": tissue_table(results), "edges": paga_edges(results), "bins": bins}


def shifts_stage(cells: PathLike, tissues: PathLike, sample_sheet: PathLike,
                 contrasts: Sequence[Mapping], contrast_settings: Mapping,
                 settings: TrajectorySettings) -> dict[str, pd.DataFrame]:
    """Rule trajectory_shifts: the condition shift along pseudotime (outputs ``tsv``,
    ``parquet``, ``per_sample``)."""

    samples = read_sample_sheet(sample_sheet)
    parsed = parse_contrasts(contrasts, samples)
    cs = ContrastSettings.from_config(contrast_settings)
    table, per_sample = trajectory_shifts(
        pd.read_parquet(cells), pd.read_csv(tissues, sep="\t", keep_default_na=False),
        samples, parsed, cs, settings)
    for row in table.itertuples():
        log.info("%s / %s / %s: %s, effect %.4g, padj %.3g%s", row.contrast, row.branch,
                 row.metric, row.status, row.effect, row.padj, f" ({row.note})" if row.note
                 else "")
    return {"tsv": table, "parquet": table, "per_sample": per_sample}
