"""Gene-set scoring of single cells with one compiled pass over a CSR matrix.

Entry point: :func:`score_gene_sets`.  It scores all sets for all cells in a single
parallel pass over the rows (plus one statistics pass), reading float32/float64 CSR data as
stored (int32 or int64 indices), dense arrays through an explicit dense path, and backed
h5ad matrices chunk by chunk so memory stays bounded by ``chunk_size``.

This module holds the public API, the scoring pass and the ``scoring`` stage.  The matrix
input, chunking and gene statistics live in :mod:`mscflow.scoring._input`; scanpy's control
genes, the weight matrices and the AUCell set-up in :mod:`mscflow.scoring._weights`; the
numba kernels in :mod:`mscflow.scoring._kernels`.

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

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from mscflow.config import Settings, settings_section
from mscflow.genesets import GeneSetLibrary
from mscflow.io import read_sample_rows
from mscflow.scoring import _input
from mscflow.scoring import _kernels as K
from mscflow.scoring._input import (
    GeneStats,
    _check_values,
    _csr_parts,
    _given_means,
    _is_dense,
    _Matrix,
    _normalise_sets,
    _read_chunk,
    _resolve_input,
    _row_chunks,
    _threads,
    gene_stats,
)
from mscflow.scoring._weights import (
    _aucell_setup,
    _lane_layout,
    _linear_weights,
    decoupler_n_up,
    scanpy_control_genes,
    scanpy_cuts,
    scanpy_gene_means,
)

__all__ = [
    "METHODS",
    "GeneStats",
    "Method",
    "ScoringSettings",
    "combine_sample_scores",
    "decoupler_n_up",
    "gene_means",
    "gene_stats",
    "gene_stats_for",
    "scanpy_control_genes",
    "scanpy_cuts",
    "scanpy_gene_means",
    "score_gene_sets",
    "score_library",
    "score_sample",
]

Method = Literal["scanpy", "aucell", "mean", "zscore"]
METHODS: tuple[str, ...] = ("scanpy", "aucell", "mean", "zscore")


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
    gene_stats: GeneStats | None = None,
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
    gene_stats
        Any method: statistics from :func:`gene_stats_for` of a larger matrix whose rows
        ``data`` is a part of (e.g. one sample of a merged object).  The cells are then
        scored exactly as they are when the whole matrix is scored (control genes, z-scores
        and AUCell's ranks come from the whole), so per-sample jobs reproduce one job's
        table to the bit.

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
    if gene_means is not None and gene_stats is not None:
        raise ValueError("pass gene_means=... or gene_stats=..., not both")
    if gene_stats is not None:
        gene_stats.check_for(method, mat.n_vars)
    with _threads(n_threads) as nt:
        if gene_means is not None:
            means, stats = _given_means(gene_means, mat, chunks)
        elif gene_stats is not None:
            stats = gene_stats
        else:
            # the module's gene_stats: the argument of that name is None here
            stats = _input.gene_stats(mat, chunks, want=_WANTED_STATS.get(method, "sums"),
                                      n_parts=nt)
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


def gene_stats_for(
    data: Any,
    method: Method = "scanpy",
    *,
    var_names: Sequence[str] | None = None,
    layer: str | None = None,
    chunk_size: int | None = None,
    n_threads: int | None = None,
) -> GeneStats:
    """The per-gene statistics :func:`score_gene_sets` computes for ``method`` (and for
    ``scanpy``, whose sums every method's statistics include), from one pass over ``data``.

    Pass the result as ``gene_stats=`` to score parts of ``data`` (row subsets) in separate
    calls or jobs with the scores of the whole.  Same inputs as :func:`score_gene_sets`.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}")
    mat, genes, _ = _resolve_input(data, layer, var_names, None)
    chunks = _row_chunks(mat, chunk_size)
    with _threads(n_threads) as nt:
        stats = gene_stats(mat, chunks, want=_WANTED_STATS.get(method, "sums"), n_parts=nt)
    _check_values(stats, method, genes)
    return stats


_WANTED_STATS = {"zscore": "moments", "aucell": "nnz"}


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


# ---------------------------------------------------------------------------------------
# The scoring stage: the run's library on the clustered object
# ---------------------------------------------------------------------------------------


@settings_section("scoring")
class ScoringSettings(Settings):
    """Config section ``scoring`` (fields: its keys in the schema; config/README.md)."""


def score_library(adata: Any, library: GeneSetLibrary, settings: ScoringSettings, *,
                  random_state: int, n_threads: int | None = None,
                  stats: GeneStats | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score the library's programme sets (``settings.method``) and marker sets (always
    ``scanpy``: the annotation compares marker scores) on log-normalised ``adata``.

    One statistics pass serves both (or ``stats``: :func:`gene_stats_for` of the whole
    object ``adata``'s cells are taken from, when it is one sample's share of it).
    Returns (programme scores, marker scores), cells x sets.
    """
    if stats is None:
        stats = gene_stats_for(adata, settings.method, n_threads=n_threads)
    options = {"random_state": random_state, "n_bins": settings.n_bins,
               "ctrl_size": settings.ctrl_size, "n_threads": n_threads, "gene_stats": stats}
    programmes = score_gene_sets(adata, library.programme_sets(), method=settings.method,
                                 **options)
    markers = {name: list(genes) for name, genes in library.markers.items()}
    marker_scores = score_gene_sets(adata, markers, method="scanpy", **options)
    return programmes, marker_scores


def score_sample(h5ad: str | Path, sample: str, library: GeneSetLibrary,
                 settings: ScoringSettings, stats: GeneStats, *, random_state: int,
                 n_threads: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`score_library` on the cells of one sample of a merged h5ad (read without the
    other samples' rows), with ``stats`` of all its cells (:func:`gene_stats_for`): the
    scores equal those of scoring every cell at once, to the bit. Empty tables (the sets as
    columns) when the file holds no cell of the sample."""
    adata = read_sample_rows(h5ad, sample, what="per-sample scoring")
    if adata is None:
        empty = pd.Index([], name="cell")
        return (pd.DataFrame(index=empty, columns=list(library.programme_sets()), dtype=float),
                pd.DataFrame(index=empty, columns=list(library.markers), dtype=float))
    return score_library(adata, library, settings, random_state=random_state,
                         n_threads=n_threads, stats=stats)


def combine_sample_scores(tables: Sequence[pd.DataFrame], cells: pd.Index) -> pd.DataFrame:
    """Per-sample score tables as one, in the order of ``cells`` (the merged object's
    obs names); a cell missing from the tables or in two of them is an error."""
    combined = pd.concat(tables)
    if combined.index.has_duplicates:
        twice = combined.index[combined.index.duplicated()].unique()[:5].tolist()
        raise ValueError(f"cells {twice} are in more than one sample's scores")
    missing = cells.difference(combined.index)
    if len(missing) or len(combined) != len(cells):
        raise ValueError(f"{len(missing)} cells of the merged object have no score "
                         f"(e.g. {missing[:5].tolist()}); rerun the per-sample scoring")
    return combined.loc[cells]
