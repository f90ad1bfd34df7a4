"""Matrix input of :mod:`mscflow.scoring.core`: what is scored, in which chunks, and the gene
statistics pass.

- input normalisation: AnnData / CSR / dense / backed matrices classified into a
  :class:`_Matrix`, names and dtype checked, gene sets mapped to column indices;
- threads and chunks: numba's thread count for one call, the row ranges streamed, each
  chunk read as CSR or a C-contiguous array;
- pass 1, gene statistics: :func:`gene_stats` (sums, non-zero counts, moments) in one
  streaming pass, caller-supplied gene means, and the NaN / raw-counts checks.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numba
import numpy as np
import pandas as pd
import scipy.sparse as sp

from mscflow.io import write_npz_atomic
from mscflow.scoring import _kernels as K

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


def _is_dense(mat: _Matrix) -> bool:
    """True for dense in-memory or dense backed matrices (scanpy averages those in-dtype)."""
    return mat.kind == "dense" or (mat.kind == "backed" and not _is_sparse_backed(mat))


def _is_sparse_backed(mat: _Matrix) -> bool:
    """True if a backed matrix is a sparse dataset (rather than a dense h5py dataset)."""
    return hasattr(mat.x, "format") or hasattr(mat.x, "group")


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

    def save(self, path: str | Path) -> None:
        """Write the statistics to an ``.npz`` file (through a temporary file renamed into
        place), e.g. once for all cells before per-sample scoring jobs."""
        write_npz_atomic(path, sums=self.sums, sums64=self.sums64, sumsq64=self.sumsq64,
                         nnz=self.nnz, n_obs=self.n_obs, vmax=self.vmax,
                         integer_valued=self.integer_valued)

    @classmethod
    def load(cls, path: str | Path) -> GeneStats:
        """Read statistics written by :meth:`save`."""
        with np.load(path) as f:
            return cls(f["sums"], f["sums64"], f["sumsq64"], f["nnz"], int(f["n_obs"]),
                       float(f["vmax"]), bool(f["integer_valued"]))

    def check_for(self, method: str, n_vars: int) -> None:
        """Raise ValueError unless these statistics can score ``method`` on ``n_vars`` genes
        (zscore needs the moments, aucell the non-zero counts)."""
        need = {"zscore": ("sums64", "sumsq64"), "aucell": ("nnz",)}.get(method, ())
        short = [name for name in ("sums", *need) if getattr(self, name).shape != (n_vars,)]
        if short:
            raise ValueError(
                f"gene_stats lack {short} for {n_vars} genes and method={method!r}; compute "
                f"them with mscflow.scoring.core.gene_stats_for(data, {method!r}) on the whole "
                "matrix the scored rows come from"
            )


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


def _given_means(
    means: Any, mat: _Matrix, chunks: list[tuple[int, int]]
) -> tuple[np.ndarray, GeneStats]:
    """Validate caller-supplied gene means; stats carrying them for the value checks."""
    means = np.asarray(means)
    if means.shape != (mat.n_vars,) or means.dtype.kind != "f":
        raise ValueError(
            f"gene_means must be a float array of one mean per gene ({mat.n_vars}), got "
            f"{means.dtype} {means.shape}; compute it with mscflow.scoring.core.gene_means(data)"
        )
    sample = _sample_values(_read_chunk(mat, *chunks[0])) if chunks else np.zeros(0)
    finite = sample[np.isfinite(sample)]
    vmax = float(finite.max()) if finite.size else 0.0
    integer = bool(np.all(finite == np.floor(finite)))
    none = np.zeros(1)
    stats = GeneStats(means, none, none, none.astype(np.int64), mat.n_obs, vmax, integer)
    return means, stats


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
