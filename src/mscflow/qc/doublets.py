"""Fast Scrublet: the same doublet model as ``sc.pp.scrublet``, without densifying.

Scrublet (Wolock et al. 2019) simulates doublets by adding the counts of random cell pairs,
embeds observed and simulated transcriptomes in a PCA of the highly variable genes, and
scores each cell by the share of simulated doublets among its k nearest neighbours. scanpy's
implementation densifies the z-scored matrix of cells plus simulated doublets, runs ARPACK on
it, and builds a k-nearest-neighbour graph (pynndescent above 4,096 points, with k about 120)
on the union. Here:

* the PCA is the eigendecomposition of the HVG correlation matrix of the observed cells,
  computed from sparse products (``X.T @ X``); z-scoring is folded into the projection, so
  the matrices stay sparse and nothing is densified but the ``n_cells x n_pcs`` embedding;
* the neighbour search is exact (blocked brute force on the small embedding, float32 GEMM
  plus ``argpartition``) and only counts simulated neighbours; no graph is built.

The preprocessing (gene filter, median normalisation, log1p, seurat HVG), the simulation, the
score formula and the automatic threshold (``skimage.filters.threshold_minimum`` on the
simulated scores) follow scanpy 1.11 exactly, so calls agree with ``sc.pp.scrublet``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DoubletResult:
    """Scores and calls of one sample (cells in input order): ``scores_sim`` are the
    scores of the simulated (artificial) doublets, ``embedding`` the cells' PCA coordinates
    the method worked in (NaN rows for cells it did not score)."""

    scores: np.ndarray
    predicted: np.ndarray
    threshold: float
    scores_sim: np.ndarray
    expected_rate: float = float("nan")
    embedding: np.ndarray | None = None


def seurat_dispersion(normalised: sparse.csr_matrix, *, n_bins: int = 20
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Seurat-flavour statistics of normalised counts: log mean and normalised dispersion.

    A NumPy version of the statistics of ``sc.pp.highly_variable_genes(flavor="seurat")``
    applied after ``log1p``: same log mean, log dispersion and 20 equal-width mean bins,
    without scanpy's JIT-compiled statistics (a few seconds of compilation in every fresh
    process). Genes without variance get NaN dispersion.
    """
    n = normalised.shape[0]
    mean = np.asarray(normalised.mean(axis=0), dtype=np.float64).ravel()
    sq = np.asarray(normalised.multiply(normalised).mean(axis=0), dtype=np.float64).ravel()
    var = (sq - mean**2) * n / max(n - 1, 1)
    mean[mean == 0] = 1e-12
    dispersion = var / mean
    dispersion[dispersion == 0] = np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        dispersion = np.log(dispersion)
    log_mean = np.log1p(mean)
    frame = pd.DataFrame({"disp": dispersion, "bin": pd.cut(log_mean, bins=n_bins)})
    stats = frame.groupby("bin", observed=True)["disp"].agg(avg="mean", dev="std")
    single = stats["dev"].isna()
    stats.loc[single, "dev"] = stats.loc[single, "avg"]
    stats.loc[single, "avg"] = 0.0
    per_gene = stats.loc[frame["bin"]].to_numpy()
    return log_mean, (dispersion - per_gene[:, 0]) / per_gene[:, 1]


def seurat_hvg(normalised: sparse.csr_matrix, *, min_mean: float = 0.0125, max_mean: float = 3.0,
               min_disp: float = 0.5, n_bins: int = 20) -> np.ndarray:
    """Seurat-flavour highly variable genes (scanpy's defaults and cut-offs) of normalised
    counts; see :func:`seurat_dispersion`."""
    log_mean, disp_norm = seurat_dispersion(normalised, n_bins=n_bins)
    with np.errstate(invalid="ignore"):
        return (log_mean > min_mean) & (log_mean < max_mean) & (disp_norm > min_disp)


def hvg_mask(counts: sparse.csr_matrix) -> np.ndarray:
    """Genes Scrublet embeds: seurat-flavour HVGs of median-normalised, log1p counts."""
    totals = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    return seurat_hvg(scale_rows(counts, float(np.median(totals))))


def simulate_doublets(counts: sparse.csr_matrix, ratio: float, seed: int) -> sparse.csr_matrix:
    """Sum the counts of ``ratio * n`` random cell pairs (scanpy's pairs for the same seed)."""
    from sklearn.utils.random import sample_without_replacement

    n = counts.shape[0]
    flat = sample_without_replacement(n * n, int(n * ratio),
                                      random_state=np.random.RandomState(seed))
    first, second = np.unravel_index(flat, (n, n))
    return (counts[first] + counts[second]).tocsr()


def scale_rows(x: sparse.csr_matrix, target: float) -> sparse.csr_matrix:
    """Rows scaled to sum to ``target`` (sparse, float64)."""
    totals = np.asarray(x.sum(axis=1)).ravel().astype(np.float64)
    factors = np.divide(target, totals, out=np.zeros_like(totals), where=totals > 0)
    return sparse.diags(factors) @ x.astype(np.float64)


def zscore_pca_basis(obs: sparse.spmatrix | np.ndarray, n_comps: int, *, top_only: bool = False
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Loadings and offset of the PCA of the gene-z-scored observed cells: the embedding of
    any rows ``m`` (same genes) is ``m @ loadings - offset``.

    Uses the correlation matrix (genes x genes) from sparse products, so nothing is
    densified (a dense ``obs`` takes the faster BLAS product); equals PCA of the dense
    z-scored matrix up to component signs.
    ``top_only`` computes only the ``n_comps`` leading eigenvectors (faster for many genes;
    scrublet keeps the full decomposition, whose rounding scanpy's comparison was made on).
    """
    n = obs.shape[0]
    mean = np.asarray(obs.mean(axis=0)).ravel()
    squares = obs.multiply(obs) if sparse.issparse(obs) else obs * obs
    sq = np.asarray(squares.mean(axis=0)).ravel()
    sd = np.sqrt(np.maximum(sq - mean**2, 0.0) * n / max(n - 1, 1))
    sd[sd == 0] = 1.0
    gram = obs.T @ obs
    gram = (gram.toarray() if sparse.issparse(gram) else gram) / n - np.outer(mean, mean)
    corr = gram / np.outer(sd, sd)
    if top_only:
        from scipy.linalg import eigh

        p = corr.shape[0]
        evals, evecs = eigh(corr, subset_by_index=[p - n_comps, p - 1])
    else:
        evals, evecs = np.linalg.eigh(corr)
    comps = evecs[:, np.argsort(evals)[::-1][:n_comps]]
    loadings = comps / sd[:, None]
    return loadings, mean @ loadings


def zscore_pca(obs: sparse.csr_matrix, sim: sparse.csr_matrix,
               n_comps: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA of the gene-z-scored observed cells; both sets projected on its components."""
    loadings, offset = zscore_pca_basis(obs, n_comps)
    return np.asarray(obs @ loadings) - offset, np.asarray(sim @ loadings) - offset


def count_sim_neighbours(points: np.ndarray, is_sim: np.ndarray, k: int) -> np.ndarray:
    """For every point, how many of its ``k`` nearest (itself included) are simulated.

    Exact search: scikit-learn's brute-force k-nearest-neighbour reduction (chunked,
    multithreaded distance computation with a running top-k, no distance matrix kept).
    """
    from sklearn.neighbors import NearestNeighbors

    pts = np.ascontiguousarray(points, dtype=np.float32)
    index = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(pts)
    nearest = index.kneighbors(pts, return_distance=False)
    return is_sim[nearest].sum(axis=1)


def doublet_likelihood(n_sim_neigh: np.ndarray, k: int, n_obs: int, n_sim: int,
                       rate: float, stdev_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Scrublet's doublet score and its standard error from neighbour counts."""
    r = n_sim / float(n_obs)
    q = (n_sim_neigh.astype(np.float64) + 1) / (k + 2)
    denom = 1 - rate - q * (1 - rate - rate / r)
    ld = q * rate / r / denom
    se_q = np.sqrt(q * (1 - q) / (k + 3))
    se_ld = (q * rate / r / denom**2
             * np.sqrt((se_q / q * (1 - rate)) ** 2 + (stdev_rate / rate * (1 - q)) ** 2))
    return ld, se_ld


def auto_threshold(scores_sim: np.ndarray) -> float:
    """Minimum between the two modes of the simulated scores (NaN if not bimodal)."""
    from skimage.filters import threshold_minimum

    try:
        return float(threshold_minimum(scores_sim))
    except RuntimeError:
        return float("nan")


def scrublet_fast(counts: sparse.spmatrix, *, expected_rate: float = 0.05,
                  stdev_rate: float = 0.02, sim_ratio: float = 2.0, n_comps: int = 30,
                  n_neighbors: int | None = None, random_state: int = 0) -> DoubletResult:
    """Scrublet on a raw count matrix (cells x genes); see the module docstring.

    Cells with fewer than 3 detected genes (dropped by scanpy too) get score NaN.
    """
    counts = sparse.csr_matrix(counts)
    ok_cells = np.diff(counts.indptr) >= 3
    x = counts[ok_cells]
    x = x[:, np.asarray((x > 0).sum(axis=0)).ravel() >= 3]
    x = x[:, hvg_mask(x)].astype(np.float64)
    sim = simulate_doublets(x, sim_ratio, random_state)
    n_obs, n_sim = x.shape[0], sim.shape[0]
    emb_obs, emb_sim = zscore_pca(scale_rows(x, 1e6), scale_rows(sim, 1e6),
                                  min(n_comps, x.shape[1] - 1, n_obs - 1))
    k = n_neighbors or round(0.5 * np.sqrt(n_obs))
    k_adj = round(k * (1 + n_sim / float(n_obs)))
    is_sim = np.r_[np.zeros(n_obs, bool), np.ones(n_sim, bool)]
    counts_sim = count_sim_neighbours(np.vstack([emb_obs, emb_sim]), is_sim, k_adj)
    ld, _ = doublet_likelihood(counts_sim, k_adj, n_obs, n_sim, expected_rate, stdev_rate)
    threshold = auto_threshold(ld[n_obs:])
    scores = np.full(counts.shape[0], np.nan)
    scores[ok_cells] = ld[:n_obs]
    predicted = np.zeros(counts.shape[0], dtype=bool)
    if np.isfinite(threshold):
        predicted[ok_cells] = ld[:n_obs] > threshold
    else:
        log.warning("doublet scores are not bimodal: no automatic threshold, no doublets called")
    embedding = np.full((counts.shape[0], emb_obs.shape[1]), np.nan)
    embedding[ok_cells] = emb_obs
    return DoubletResult(scores, predicted, threshold, ld[n_obs:], expected_rate, embedding)


# 10x Genomics' rule of thumb: about 0.8 % doublets per 1,000 cells recovered.
TENX_RATE_PER_1000_CELLS = 0.008
# The derived rate is capped here (the schema's bound for a configured rate is 0.5).
MAX_DERIVED_RATE = 0.25


def expected_doublet_rate(configured: float | None, n_cells: int) -> float:
    """The configured rate, or 0.8 % per 1,000 cells recovered (the 10x rule of thumb;
    ``n_cells`` are the sample's cells before any filter), capped at MAX_DERIVED_RATE."""
    if configured is not None:
        return float(configured)
    return float(min(TENX_RATE_PER_1000_CELLS * n_cells / 1000, MAX_DERIVED_RATE))


def nearest_singlets(embedding: np.ndarray, called: np.ndarray) -> np.ndarray:
    """For each called doublet, the index of the nearest cell not called (-1 for the other
    cells, and for all when no cell is left); rows with NaN coordinates take no part."""
    from sklearn.neighbors import NearestNeighbors

    out = np.full(len(called), -1)
    usable = np.isfinite(embedding).all(axis=1)
    singlets = np.flatnonzero(usable & ~called)
    doublets = np.flatnonzero(usable & called)
    if len(singlets) == 0 or len(doublets) == 0:
        return out
    index = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(embedding[singlets])
    out[doublets] = singlets[index.kneighbors(embedding[doublets], return_distance=False)[:, 0]]
    return out
