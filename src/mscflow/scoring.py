"""Gene-set scoring of single cells with one compiled pass over a CSR matrix.

Entry point: :func:`score_gene_sets`.  It scores all sets for all cells in a single
parallel pass over the rows (plus one statistics pass), reading float32/float64 CSR data as
stored (int32 or int64 indices), dense arrays through an explicit dense path, and backed
h5ad matrices chunk by chunk so memory stays bounded by ``chunk_size``.

Methods
-------
``scanpy``
    Exactly :func:`scanpy.tl.score_genes` (scanpy 1.11.5): mean of the set genes minus the
    mean of control genes drawn per expression bin.  Gene means are computed once for all
    sets, bit-identical to scanpy's (float32 data is summed in float32 in row order, as
    scipy does), so the bins and the control genes drawn with ``random_state`` are the
    same.  With an integer ``random_state`` every set gets a fresh
    ``np.random.RandomState(random_state)``, like calling scanpy once per set.
``aucell``
    AUCell as decoupler 2.2 computes it: genes never detected in any cell are dropped,
    the remaining genes are ranked per cell by decreasing value with ties broken in a
    fixed random gene order (``np.random.default_rng(0).choice(n, n, replace=False)``
    over the kept genes, decoupler's ``shuffle=True``), ``n_up`` defaults to
    ``ceil(0.05 * n_kept)`` clipped to ``[2, n_kept]``, and the score is the area under
    the recovery curve of the set within the top ``n_up`` ranks divided by its maximum.
    Set genes never detected are dropped from the set (decoupler's pruning).  Weights
    are ignored.  Cells with no non-zero value get NaN (decoupler drops such cells).
``mean``
    Weighted mean of the set genes: ``sum_g w_g x_g / sum_g |w_g|`` (weights 1 if not
    given).
``zscore``
    Weighted mean of per-gene z-scores ``(x_g - mean_g) / sd_g`` (sd with ddof=1, as
    :func:`scanpy.pp.scale`); genes with zero variance contribute 0.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numba
import numpy as np
import pandas as pd
import scipy.sparse as sp

from mscflow import _scoring_kernels as K

Method = Literal["scanpy", "aucell", "mean", "zscore"]
METHODS: tuple[str, ...] = ("scanpy", "aucell", "mean", "zscore")
_RAW_COUNT_MAX = 20.0  # integer-valued data with a larger max looks like raw counts
_DEFAULT_CHUNK_NNZ = 20_000_000  # target stored entries per streamed chunk


# ---------------------------------------------------------------------------------------
# Input normalisation
# ---------------------------------------------------------------------------------------


@dataclass
class _Matrix:
    """A cells x genes matrix in one of three storage kinds."""

    x: Any
    kind: Literal["csr", "dense", "backed"]
    n_obs: int
    n_vars: int
    dtype: np.dtype


def _as_matrix(x: Any) -> _Matrix:
    """Classify ``x`` as in-memory CSR, dense array, or backed (chunk-readable) matrix."""
    try:
        from anndata.abc import CSCDataset, CSRDataset
    except ImportError:  # pragma: no cover - anndata is a dependency
        CSRDataset = CSCDataset = ()  # type: ignore[assignment,misc]
    if isinstance(x, CSCDataset) or (sp.issparse(x) and x.format != "csr"):
        raise TypeError(
            f"matrix is sparse in {getattr(x, 'format', 'csc')!r} format; scoring streams rows, "
            "so convert it to CSR first (e.g. X.tocsr(), or write the h5ad with CSR X)."
        )
    if sp.issparse(x):
        return _Matrix(x, "csr", x.shape[0], x.shape[1], np.dtype(x.dtype))
    if isinstance(x, CSRDataset):
        return _Matrix(x, "backed", x.shape[0], x.shape[1], np.dtype(x.dtype))
    try:
        import h5py

        if isinstance(x, h5py.Dataset):
            if x.ndim != 2:
                raise ValueError(f"backed dense matrix must be 2-D, got shape {x.shape}")
            return _Matrix(x, "backed", x.shape[0], x.shape[1], np.dtype(x.dtype))
    except ImportError:  # pragma: no cover
        pass
    if isinstance(x, np.ndarray):
        if x.ndim != 2:
            raise ValueError(f"matrix must be 2-D (cells x genes), got shape {x.shape}")
        return _Matrix(x, "dense", x.shape[0], x.shape[1], x.dtype)
    raise TypeError(
        f"cannot score a matrix of type {type(x).__name__}; pass an AnnData, a scipy CSR "
        "matrix, a numpy array or a backed anndata CSR dataset."
    )


def _resolve_input(
    data: Any, layer: str | None, var_names: Sequence[str] | None, obs_names: Any
) -> tuple[_Matrix, pd.Index, pd.Index]:
    """Return the matrix, gene names and cell names of ``data`` (AnnData or matrix)."""
    try:
        from anndata import AnnData
    except ImportError:  # pragma: no cover
        AnnData = ()  # type: ignore[assignment,misc]
    if isinstance(data, AnnData):
        if layer is None:
            x = data.X
        elif layer in data.layers:
            x = data.layers[layer]
        else:
            raise ValueError(
                f"layer={layer!r} not found; available layers: {list(data.layers)}"
            )
        if x is None:
            raise ValueError("AnnData has no X; pass layer=... naming the expression layer")
        genes = pd.Index(data.var_names if var_names is None else var_names)
        cells = pd.Index(data.obs_names if obs_names is None else obs_names)
    else:
        if layer is not None:
            raise ValueError("layer=... only applies to AnnData input")
        if var_names is None:
            raise ValueError("a bare matrix needs its gene names: pass var_names=...")
        x = data
        genes = pd.Index(var_names)
        cells = None if obs_names is None else pd.Index(obs_names)
    mat = _as_matrix(x)
    if cells is None:
        cells = pd.RangeIndex(mat.n_obs)
    if len(genes) != mat.n_vars:
        raise ValueError(f"var_names has {len(genes)} names but the matrix has {mat.n_vars} genes")
    if len(cells) != mat.n_obs:
        raise ValueError(f"obs_names has {len(cells)} names but the matrix has {mat.n_obs} cells")
    if genes.has_duplicates:
        dup = genes[genes.duplicated()].unique()[:10].tolist()
        raise ValueError(
            f"duplicate gene names {dup}; make them unique (e.g. adata.var_names_make_unique())"
        )
    if mat.dtype.kind != "f":
        raise ValueError(
            f"matrix dtype is {mat.dtype}; scoring needs float32/float64 log-normalised data "
            "(normalise and log1p first, or pass layer=...)"
        )
    return mat, genes, cells


def _normalise_sets(
    gene_sets: Mapping[str, Sequence[str] | Mapping[str, float]], genes: pd.Index
) -> dict[str, tuple[np.ndarray, np.ndarray, bool]]:
    """Map each set to (gene indices, weights, weighted?) after dropping unknown genes.

    Duplicated genes keep their first occurrence.  Genes not in ``genes`` are reported in one
    warning; a set left empty raises ValueError naming it.
    """
    if not isinstance(gene_sets, Mapping) or len(gene_sets) == 0:
        raise ValueError("gene_sets must be a non-empty mapping of set name -> genes")
    out: dict[str, tuple[np.ndarray, np.ndarray, bool]] = {}
    missing: dict[str, list[str]] = {}
    for name, members in gene_sets.items():
        if isinstance(members, str):
            raise ValueError(
                f"gene set {name!r} is a single string; pass a list of genes, e.g. [{members!r}]"
            )
        if isinstance(members, Mapping):
            names = list(members.keys())
            w = np.asarray([float(v) for v in members.values()], dtype=np.float64)
            weighted = True
        else:
            names = list(members)
            w = np.ones(len(names), dtype=np.float64)
            weighted = False
        if not np.all(np.isfinite(w)):
            raise ValueError(f"gene set {name!r} has non-finite weights")
        idx = genes.get_indexer(pd.Index(names, dtype=object))
        lost = [g for g, i in zip(names, idx, strict=True) if i < 0]
        if lost:
            missing[name] = lost
        keep = idx >= 0
        idx, w = idx[keep], w[keep]
        _, first = np.unique(idx, return_index=True)
        first.sort()
        idx, w = idx[first], w[first]
        if len(idx) == 0:
            raise ValueError(
                f"gene set {name!r} has no gene in var_names (missing: {lost[:10]}); check the "
                "gene symbols / species, or drop the set"
            )
        out[str(name)] = (idx.astype(np.int64), w, weighted)
    if missing:
        msg = "; ".join(f"{k}: {v[:10]}{'...' if len(v) > 10 else ''}" for k, v in missing.items())
        warnings.warn(f"genes not in var_names were dropped: {msg}", UserWarning, stacklevel=3)
    return out


# ---------------------------------------------------------------------------------------
# Threads and chunks
# ---------------------------------------------------------------------------------------


@contextmanager
def _threads(n_threads: int | None):
    """Temporarily set numba's thread count (None keeps the current setting)."""
    if n_threads is None:
        yield numba.get_num_threads()
        return
    if n_threads < 1:
        raise ValueError(f"n_threads must be >= 1 or None, got {n_threads}")
    old = numba.get_num_threads()
    numba.set_num_threads(min(int(n_threads), numba.config.NUMBA_NUM_THREADS))
    try:
        yield numba.get_num_threads()
    finally:
        numba.set_num_threads(old)


def _row_chunks(mat: _Matrix, chunk_size: int | None) -> list[tuple[int, int]]:
    """Row ranges to process; in-memory matrices default to a single chunk."""
    n = mat.n_obs
    if chunk_size is None:
        if mat.kind == "csr":
            return [(0, n)] if n else []
        if mat.kind == "dense":
            chunk_size = max(1, 4_000_000 // max(mat.n_vars, 1))
        else:
            chunk_size = _default_backed_chunk(mat)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size}")
    return [(a, min(a + chunk_size, n)) for a in range(0, n, chunk_size)]


def _default_backed_chunk(mat: _Matrix) -> int:
    """Rows per chunk so that a streamed chunk holds about ``_DEFAULT_CHUNK_NNZ`` entries."""
    x = mat.x
    if hasattr(x, "group") and "indptr" in x.group:
        nnz = int(x.group["indptr"][-1])
        per_row = max(nnz / max(mat.n_obs, 1), 1.0)
    else:
        per_row = float(mat.n_vars)
    return max(1, int(_DEFAULT_CHUNK_NNZ / per_row))


def _read_chunk(mat: _Matrix, a: int, b: int) -> Any:
    """Rows ``a:b`` of the matrix as CSR (sparse kinds) or C-contiguous ndarray (dense)."""
    if mat.kind == "csr":
        if a == 0 and b == mat.n_obs:
            return mat.x
        return mat.x[a:b]
    if mat.kind == "dense":
        return np.ascontiguousarray(mat.x[a:b])
    chunk = mat.x[a:b]
    if sp.issparse(chunk):
        return chunk.tocsr() if chunk.format != "csr" else chunk
    return np.ascontiguousarray(chunk)


def _csr_parts(c: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays with matching index dtypes (int32 or int64 accepted)."""
    data, indices, indptr = c.data, c.indices, c.indptr
    if data.dtype.kind != "f":
        raise ValueError(f"matrix dtype is {data.dtype}; pass float32/float64 log-normalised data")
    return data, indices, indptr


# ---------------------------------------------------------------------------------------
# Pass 1: gene statistics
# ---------------------------------------------------------------------------------------


@dataclass
class GeneStats:
    """Per-gene statistics of a matrix from one streaming pass."""

    sums: np.ndarray  # in the matrix dtype, summed in row order (what scipy/numpy return)
    sums64: np.ndarray  # float64 sums
    sumsq64: np.ndarray  # float64 sums of squares
    nnz: np.ndarray  # number of non-zero values per gene
    n_obs: int
    vmax: float  # largest finite value in a row sample
    integer_valued: bool  # sampled values all integers


def _split_bounds(weights: np.ndarray, n_parts: int) -> np.ndarray:
    """Split genes into ``n_parts`` contiguous ranges of roughly equal total ``weights``."""
    n = len(weights)
    n_parts = max(1, min(n_parts, n))
    cum = np.cumsum(weights, dtype=np.float64)
    total = cum[-1] if n else 0.0
    if total <= 0:
        b = np.linspace(0, n, n_parts + 1).round().astype(np.int64)
    else:
        targets = total * np.arange(1, n_parts) / n_parts
        inner = np.searchsorted(cum, targets, side="left") + 1
        b = np.concatenate([[0], inner, [n]]).astype(np.int64)
    return np.maximum.accumulate(np.clip(b, 0, n))


def _column_weights(c: Any, n_vars: int, n_sample: int = 128) -> np.ndarray:
    """Approximate stored entries per gene from a few evenly spaced rows (for balancing)."""
    n = c.shape[0]
    if n == 0:
        return np.ones(n_vars)
    rows = np.unique(np.linspace(0, n - 1, min(n, n_sample)).astype(np.int64))
    idx = _row_entries(c.indices, c.indptr, rows)
    return np.bincount(idx, minlength=n_vars).astype(np.float64) + 1.0


def _row_entries(arr: np.ndarray, indptr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Stored entries of ``rows`` (few rows: a short loop, no index arrays the size of nnz)."""
    if len(rows) == 0:
        return arr[:0]
    return np.concatenate([arr[indptr[r] : indptr[r + 1]] for r in rows.tolist()])


def _sample_values(c: Any, n_sample: int = 200) -> np.ndarray:
    """Stored values of a few evenly spaced rows of a chunk (for the raw-counts check)."""
    n = c.shape[0]
    if n == 0:
        return np.zeros(0)
    rows = np.unique(np.linspace(0, n - 1, min(n, n_sample)).astype(np.int64))
    if isinstance(c, np.ndarray):
        return c[rows].ravel()
    return _row_entries(c.data, c.indptr, rows)


def gene_stats(
    mat: _Matrix, chunks: list[tuple[int, int]], *, want: str, n_parts: int
) -> GeneStats:
    """Stream the matrix once and return per-gene statistics.

    ``want`` is ``"sums"`` (sums in the matrix dtype only), ``"nnz"`` (also non-zero
    counts) or ``"moments"`` (also float64 sums and sums of squares).  The value range and
    integer check come from a sample of rows of the first chunk.
    """
    g = mat.n_vars
    want64 = want == "moments"
    sums = np.zeros(g, dtype=mat.dtype)
    sums64 = np.zeros(g if want64 else 1, dtype=np.float64)
    sumsq64 = np.zeros(g if want64 else 1, dtype=np.float64)
    nnz = np.zeros(g if want == "nnz" else 1, dtype=np.int64)
    sample = np.zeros(0)
    bounds = None
    for a, b in chunks:
        c = _read_chunk(mat, a, b)
        if a == chunks[0][0]:
            sample = _sample_values(c)
        if isinstance(c, np.ndarray):
            if bounds is None:
                bounds = _split_bounds(np.ones(g), n_parts)
            if want != "nnz":
                nnz = np.zeros(g, dtype=np.int64)
            K.gene_stats_dense(c, bounds, sums, sums64, sumsq64, nnz, want64)
            continue
        data, indices, indptr = _csr_parts(c)
        if bounds is None:
            bounds = _split_bounds(_column_weights(c, g), n_parts)
        backup = (sums.copy(), sums64.copy(), sumsq64.copy(), nnz.copy())
        if want == "sums":
            res = K.gene_sums_split(data, indices, indptr, bounds, sums)
        elif want == "nnz":
            res = K.gene_nnz_split(data, indices, indptr, bounds, sums, nnz)
        else:
            res = K.gene_moments_split(data, indices, indptr, bounds, sums, sums64, sumsq64)
        expected = int(indptr[-1] - indptr[0])
        if res[:, K.STAT_UNSORTED].any() or int(res[:, K.STAT_COUNT].sum()) != expected:
            sums[:], sums64[:], sumsq64[:], nnz[:] = backup
            full_nnz = nnz if want == "nnz" else np.zeros(g, dtype=np.int64)
            K.gene_stats_sequential(
                data, indices, indptr, sums, sums64, sumsq64, full_nnz, want64
            )
        if len(chunks) > 1 and a == chunks[0][0]:
            bounds = _split_bounds(_column_weights(c, g, n_sample=4096), n_parts)
    finite = sample[np.isfinite(sample)]
    vmax = float(finite.max()) if finite.size else 0.0
    integer = bool(np.all(finite == np.floor(finite)))
    return GeneStats(sums, sums64, sumsq64, nnz, mat.n_obs, vmax, integer)


def _check_values(stats: GeneStats, method: str, genes: pd.Index) -> None:
    """Raise ValueError for NaN/inf data, or raw counts where the method needs log data."""
    bad = ~np.isfinite(stats.sums)
    if stats.sums64.shape[0] == len(genes):
        bad |= ~np.isfinite(stats.sums64)
    if bad.any():
        names = genes[bad][:10].tolist()
        raise ValueError(
            f"matrix contains NaN or infinite values (genes e.g. {names}); replace or remove "
            "them before scoring"
        )
    if method in ("scanpy", "zscore", "mean") and stats.integer_valued and (
        stats.vmax > _RAW_COUNT_MAX
    ):
        raise ValueError(
            f"matrix is integer-valued with max {stats.vmax:g}: looks like raw counts; "
            "normalise and log1p first, or pass layer=... naming a log-normalised layer"
        )


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


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------


def score_gene_sets(
    data: Any,
    gene_sets: Mapping[str, Sequence[str] | Mapping[str, float]],
    method: Method = "scanpy",
    *,
    var_names: Sequence[str] | None = None,
    obs_names: Sequence[str] | None = None,
    layer: str | None = None,
    random_state: int | np.random.RandomState = 0,
    n_bins: int = 25,
    ctrl_size: int = 50,
    gene_pool: Sequence[str] | None = None,
    n_up: int | float | None = None,
    chunk_size: int | None = None,
    n_threads: int | None = None,
    gene_means: np.ndarray | None = None,
) -> pd.DataFrame:
    """Score every gene set in every cell; returns a cells x sets DataFrame.

    Parameters
    ----------
    data
        AnnData (in memory or opened ``backed="r"``), or a matrix (scipy CSR, numpy array,
        backed anndata CSR dataset / h5py dataset) together with ``var_names=``.  Values
        must be log-normalised for ``scanpy``, ``mean`` and ``zscore``.
    gene_sets
        Set name -> genes (a sequence of symbols, or a mapping symbol -> weight).  Genes
        not in ``var_names`` are dropped with a warning; a set left empty is an error.
    method
        ``"scanpy"``, ``"aucell"``, ``"mean"`` or ``"zscore"`` (see the module docstring).
    var_names, obs_names
        Gene / cell names for bare matrices (override AnnData's when given).
    layer
        AnnData layer to score instead of ``X``.
    random_state, n_bins, ctrl_size, gene_pool
        As in :func:`scanpy.tl.score_genes` (``scanpy`` method only).  An int seeds a
        fresh ``RandomState`` per set; a ``RandomState`` is shared across the sets.
    n_up
        AUCell: number of top-ranked genes (default ``ceil(0.05 * detected genes)``).
    chunk_size
        Rows per chunk.  In-memory CSR defaults to one pass over all rows; backed matrices
        default to chunks of about 20 million stored values.
    n_threads
        Numba threads (None = numba's current setting).
    gene_means
        ``scanpy`` method only: per-gene means from :func:`gene_means` of the same matrix
        (and ``layer``).  Skips the statistics pass, e.g. when the same matrix is scored
        for several collections of sets; the results are identical.

    Returns
    -------
    DataFrame indexed by the cell names, one float64 column per set in input order.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}")
    if not isinstance(random_state, np.random.RandomState):
        if random_state is None or isinstance(random_state, bool):
            raise ValueError("random_state must be an int seed or a np.random.RandomState")
        random_state = int(random_state)
    if ctrl_size < 1:
        raise ValueError(f"ctrl_size must be >= 1, got {ctrl_size}")
    mat, genes, cells = _resolve_input(data, layer, var_names, obs_names)
    sets = _normalise_sets(gene_sets, genes)
    chunks = _row_chunks(mat, chunk_size)
    names = list(sets)
    out = np.zeros((mat.n_obs, len(sets)), dtype=np.float64)
    if gene_means is not None and method != "scanpy":
        raise ValueError(f"gene_means=... only applies to method='scanpy', not {method!r}")
    with _threads(n_threads) as nt:
        if gene_means is not None:
            means, stats = _given_means(gene_means, mat, chunks)
        else:
            want = {"zscore": "moments", "aucell": "nnz"}.get(method, "sums")
            stats = gene_stats(mat, chunks, want=want, n_parts=nt)
        _check_values(stats, method, genes)
        if method == "aucell":
            setup = _aucell_setup(sets, stats, genes, n_up)
            _run_aucell(mat, chunks, setup, out)
        else:
            cuts = None
            if method == "scanpy":
                if gene_means is None:
                    means = scanpy_gene_means(stats, dense=_is_dense(mat))
                cuts = scanpy_cuts(means, genes, gene_pool, n_bins)
            gene_row, w, offset = _linear_weights(
                method, sets, stats, genes, cuts=cuts, ctrl_size=ctrl_size,
                random_state=random_state,
            )
            _run_linear(mat, chunks, gene_row, w, offset, out)
    return pd.DataFrame(out, index=cells, columns=pd.Index(names))


def gene_means(
    data: Any,
    *,
    var_names: Sequence[str] | None = None,
    layer: str | None = None,
    chunk_size: int | None = None,
    n_threads: int | None = None,
) -> np.ndarray:
    """Per-gene means exactly as ``score_gene_sets(..., method="scanpy")`` computes them.

    Pass the result as ``gene_means=`` to score the same matrix (and layer) again without
    the statistics pass.  Same inputs as :func:`score_gene_sets`.
    """
    mat, genes, _ = _resolve_input(data, layer, var_names, None)
    chunks = _row_chunks(mat, chunk_size)
    with _threads(n_threads) as nt:
        stats = gene_stats(mat, chunks, want="sums", n_parts=nt)
    _check_values(stats, "scanpy", genes)
    return scanpy_gene_means(stats, dense=_is_dense(mat))


def _given_means(
    means: Any, mat: _Matrix, chunks: list[tuple[int, int]]
) -> tuple[np.ndarray, GeneStats]:
    """Validate caller-supplied gene means; stats carrying them for the value checks."""
    means = np.asarray(means)
    if means.shape != (mat.n_vars,) or means.dtype.kind != "f":
        raise ValueError(
            f"gene_means must be a float array of one mean per gene ({mat.n_vars}), got "
            f"{means.dtype} {means.shape}; compute it with mscflow.scoring.gene_means(data)"
        )
    sample = _sample_values(_read_chunk(mat, *chunks[0])) if chunks else np.zeros(0)
    finite = sample[np.isfinite(sample)]
    vmax = float(finite.max()) if finite.size else 0.0
    integer = bool(np.all(finite == np.floor(finite)))
    none = np.zeros(1)
    stats = GeneStats(means, none, none, none.astype(np.int64), mat.n_obs, vmax, integer)
    return means, stats


def _is_dense(mat: _Matrix) -> bool:
    """True for dense in-memory or dense backed matrices (scanpy averages those in-dtype)."""
    return mat.kind == "dense" or (mat.kind == "backed" and not _is_sparse_backed(mat))


def _is_sparse_backed(mat: _Matrix) -> bool:
    """True if a backed matrix is a sparse dataset (rather than a dense h5py dataset)."""
    return hasattr(mat.x, "format") or hasattr(mat.x, "group")


def _run_linear(
    mat: _Matrix,
    chunks: list[tuple[int, int]],
    gene_row: np.ndarray,
    w: np.ndarray,
    offset: np.ndarray,
    out: np.ndarray,
) -> None:
    """Stream the chunks through the linear kernel (sparse) or a BLAS product (dense)."""
    used = np.flatnonzero(gene_row >= 0)
    w_dense = None
    w3 = _lane_layout(w)
    for a, b in chunks:
        c = _read_chunk(mat, a, b)
        if isinstance(c, np.ndarray):
            if w_dense is None:
                w_dense = w[gene_row[used]]
            block = c[:, used].astype(np.float64) if len(used) else np.zeros((b - a, 0))
            out[a:b] = block @ w_dense + offset
        else:
            data, indices, indptr = _csr_parts(c)
            K.score_linear_csr(data, indices, indptr, gene_row, w3, offset, out[a:b])


def _run_aucell(mat: _Matrix, chunks: list[tuple[int, int]], setup: tuple, out: np.ndarray) -> None:
    """Stream the chunks through the AUCell kernel (dense chunks converted to CSR)."""
    member_of, tiepos, mem_tiepos, ptr, flat, nu, n_kept, max_auc = setup
    for a, b in chunks:
        c = _read_chunk(mat, a, b)
        if isinstance(c, np.ndarray):
            c = sp.csr_matrix(c)
        data, indices, indptr = _csr_parts(c)
        K.aucell_csr(
            data, indices, indptr, member_of, tiepos, mem_tiepos, ptr, flat, nu, n_kept,
            max_auc, out[a:b],
        )
