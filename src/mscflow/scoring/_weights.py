"""Weights of :mod:`mscflow.scoring.core`'s one scoring pass, built from the gene statistics.

- control genes as scanpy 1.11.5 draws them: its gene means, expression bins and the
  control genes of each set;
- weight matrices: the compact genes x sets weights and per-set offsets of the linear
  methods (``scanpy``, ``mean``, ``zscore``), padded to the kernel's lane width;
- the AUCell set-up: decoupler 2.2's ``n_up``, the tie order, set membership tables and
  each set's maximal AUC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mscflow.scoring import _kernels as K
from mscflow.scoring._input import GeneStats

# ---------------------------------------------------------------------------------------
# Control genes as scanpy draws them
# ---------------------------------------------------------------------------------------


def scanpy_gene_means(stats: GeneStats, dense: bool) -> np.ndarray:
    """Gene means exactly as scanpy's ``_nan_means(X, axis=0)`` computes them.

    Sparse: ``float64(sum in matrix dtype) / n``; dense: ``np.nanmean`` in the matrix dtype.
    """
    n = stats.n_obs
    means = stats.sums.astype(np.float64) / n
    if dense:
        means = means.astype(stats.sums.dtype)
    return means


@dataclass
class _Cuts:
    """Expression-bin assignment of the gene pool, shared by all sets."""

    pool: pd.Index  # pool gene names in scanpy's order
    pool_idx: np.ndarray  # their column indices
    cut: np.ndarray  # bin of each pool gene (float, as scanpy computes it)
    pos_of: np.ndarray  # gene column -> position in pool_idx (-1 if not in the pool)
    bins: dict  # bin value -> its pool genes (column indices) in pool order


def scanpy_cuts(
    means: np.ndarray, genes: pd.Index, gene_pool: Sequence[str] | None, n_bins: int
) -> _Cuts:
    """Bin the gene pool by mean expression like scanpy's ``_score_genes_bins``."""
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    if gene_pool is None:
        pool = genes.astype("string")
    else:
        pool = pd.Index(gene_pool, dtype="string").intersection(genes)
    if len(pool) == 0:
        raise ValueError("gene_pool has no gene in var_names; pass gene names present in the data")
    pool_idx = genes.get_indexer(pool.astype(object))
    avg = pd.Series(means[pool_idx], index=pool)
    finite = np.isfinite(avg.to_numpy())
    avg = avg[finite]
    n_items = int(np.round(len(avg) / (n_bins - 1)))
    if n_items == 0:
        raise ValueError(
            f"gene pool of {len(avg)} genes is too small for n_bins={n_bins}; lower n_bins"
        )
    cut = (avg.rank(method="min") // n_items).to_numpy()
    pool_idx = pool_idx[finite]
    pos_of = np.full(len(genes), -1, dtype=np.int64)
    pos_of[pool_idx] = np.arange(len(pool_idx))
    order = np.argsort(cut, kind="stable")
    values, starts = np.unique(cut[order], return_index=True)
    groups = np.split(pool_idx[order], starts[1:])
    return _Cuts(avg.index, pool_idx, cut, pos_of, dict(zip(values.tolist(), groups, strict=True)))


def scanpy_control_genes(
    name: str,
    set_idx: np.ndarray,
    cuts: _Cuts,
    genes: pd.Index,
    *,
    ctrl_size: int,
    rng: np.random.RandomState,
) -> np.ndarray:
    """Column indices of the control genes scanpy 1.11.5 draws for one set."""
    pos = cuts.pos_of[set_idx]
    if (pos < 0).any():
        lost = genes[set_idx[pos < 0]][:10].tolist()
        raise ValueError(
            f"genes {lost} of set {name!r} are not in gene_pool (or have non-finite means); "
            "scanpy needs every set gene in the pool: widen gene_pool"
        )
    set_cuts = np.unique(cuts.cut[pos])
    in_set = np.zeros(len(genes), dtype=bool)
    in_set[set_idx] = True
    chosen: list[np.ndarray] = []
    for c in set_cuts:
        members = cuts.bins[c]
        if ctrl_size < len(members):
            members = members[rng.choice(len(members), size=ctrl_size, replace=False)]
        chosen.append(members[~in_set[members]])
    ctrl = np.unique(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    if len(ctrl) == 0:
        raise ValueError(
            f"no control genes for set {name!r} in any expression bin; widen gene_pool or "
            "lower n_bins"
        )
    return ctrl


# ---------------------------------------------------------------------------------------
# Weight matrices
# ---------------------------------------------------------------------------------------


def _compact(parts: list[tuple[np.ndarray, np.ndarray, int]], n_vars: int, n_sets: int):
    """Turn (genes, weights, set) parts into (gene_row map, compact weights genes x sets).

    Rows follow gene order; contributions to the same (gene, set) are added in part order.
    """
    gene_row = np.full(n_vars, -1, dtype=np.int32)
    if not parts:
        return gene_row, np.zeros((0, n_sets))
    g_all = np.concatenate([g for g, _, _ in parts])
    v_all = np.concatenate([v for _, v, _ in parts])
    s_all = np.concatenate([np.full(len(g), s, dtype=np.int64) for g, _, s in parts])
    order = np.unique(g_all)
    gene_row[order] = np.arange(len(order), dtype=np.int32)
    flat = gene_row[g_all].astype(np.int64) * n_sets + s_all
    w = np.bincount(flat, weights=v_all, minlength=len(order) * n_sets)
    return gene_row, w.reshape(len(order), n_sets)


def _lane_layout(w: np.ndarray) -> np.ndarray:
    """Pad compact weights (genes x sets) to the kernel's row width (multiple of LANES)."""
    n_genes, n_sets = w.shape
    n_pad = max(1, -(-n_sets // K.LANES)) * K.LANES
    padded = np.zeros((n_genes, n_pad), dtype=np.float64)
    padded[:, :n_sets] = w
    return padded


def _linear_weights(
    method: str,
    sets: dict[str, tuple[np.ndarray, np.ndarray, bool]],
    stats: GeneStats,
    genes: pd.Index,
    *,
    cuts: _Cuts | None,
    ctrl_size: int,
    random_state: int | np.random.RandomState,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights W (genes x sets, compact) and per-set offsets for the linear methods."""
    n_sets = len(sets)
    parts: list[tuple[np.ndarray, np.ndarray, int]] = []
    offset = np.zeros(n_sets, dtype=np.float64)

    def add(g_idx: np.ndarray, vals: np.ndarray, s: int) -> None:
        parts.append((np.asarray(g_idx, dtype=np.int64), np.asarray(vals, dtype=np.float64), s))

    shared_rng = random_state if isinstance(random_state, np.random.RandomState) else None
    for s, (name, (idx, w, weighted)) in enumerate(sets.items()):
        if method == "scanpy":
            if weighted and not np.allclose(w, w[0]):
                raise ValueError(
                    f"gene set {name!r} has weights, which method='scanpy' ignores; "
                    "use method='mean' or 'zscore', or pass a plain list of genes"
                )
            rng = shared_rng or np.random.RandomState(random_state)
            ctrl = scanpy_control_genes(
                name, idx, cuts, genes, ctrl_size=ctrl_size, rng=rng
            )
            add(idx, np.full(len(idx), 1.0 / len(idx)), s)
            add(ctrl, np.full(len(ctrl), -1.0 / len(ctrl)), s)
            continue
        norm = np.abs(w).sum()
        if norm == 0:
            raise ValueError(f"gene set {name!r} has all weights zero")
        if method == "mean":
            add(idx, w / norm, s)
        else:  # zscore
            n = stats.n_obs
            mu = stats.sums64[idx] / n
            var = (stats.sumsq64[idx] - n * mu * mu) / max(n - 1, 1)
            sd = np.sqrt(np.clip(var, 0.0, None))
            ok = sd > 1e-12 * np.maximum(1.0, np.abs(mu))
            coef = np.where(ok, w / np.where(ok, sd, 1.0), 0.0) / norm
            add(idx, coef, s)
            offset[s] = -float(np.sum(coef * mu))
    gene_row, wc = _compact(parts, len(genes), n_sets)
    return gene_row, wc, offset


# ---------------------------------------------------------------------------------------
# AUCell set-up
# ---------------------------------------------------------------------------------------


def decoupler_n_up(n_kept: int, n_up: int | float | None) -> int:
    """decoupler 2.2's ``_validate_n_up``: default ``ceil(0.05 * n)`` clipped to [2, n]."""
    if n_up is None:
        val = int(np.clip(np.ceil(0.05 * n_kept), 2, n_kept))
    else:
        val = int(np.ceil(n_up))
    if not n_kept >= val > 1:
        raise ValueError(
            f"n_up={n_up} must be in (1, {n_kept}] (number of genes detected in any cell)"
        )
    return val


def _aucell_setup(
    sets: dict[str, tuple[np.ndarray, np.ndarray, bool]],
    stats: GeneStats,
    genes: pd.Index,
    n_up: int | float | None,
):
    """Tie order, membership tables and max AUCs for the AUCell kernel."""
    kept = np.flatnonzero(stats.nnz > 0)
    n_kept = len(kept)
    if n_kept < 2:
        raise ValueError("aucell needs at least 2 genes detected in some cell")
    nu = decoupler_n_up(n_kept, n_up)
    perm = np.random.default_rng(seed=0).choice(np.arange(n_kept), n_kept, replace=False)
    tiepos = np.full(len(genes), np.iinfo(np.int64).max, dtype=np.int64)
    tiepos[kept[perm]] = np.arange(n_kept, dtype=np.int64)
    detected = stats.nnz > 0
    member_sets: dict[int, list[int]] = {}
    max_auc = np.zeros(len(sets), dtype=np.float64)
    for s, (name, (idx, _w, _weighted)) in enumerate(sets.items()):
        idx = idx[detected[idx]]
        if len(idx) == 0:
            raise ValueError(
                f"no gene of set {name!r} is detected in any cell; aucell cannot score it "
                "(drop the set or check the gene symbols)"
            )
        for g in idx.tolist():
            member_sets.setdefault(g, []).append(s)
        k = np.arange(1, min(len(idx), nu - 1) + 1, dtype=np.float64)
        max_auc[s] = float(np.sum(nu - k))
    members = np.array(sorted(member_sets), dtype=np.int64)
    member_of = np.full(len(genes), -1, dtype=np.int64)
    member_of[members] = np.arange(len(members))
    ptr = np.zeros(len(members) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(member_sets[g]) for g in members.tolist()])
    flat = np.array([s for g in members.tolist() for s in member_sets[g]], dtype=np.int64)
    return member_of, tiepos, tiepos[members], ptr, flat, nu, n_kept, max_auc
