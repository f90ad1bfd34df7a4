"""Doublet classifier in the spirit of scDblFinder (Germain et al. 2021, F1000Research).

Per sample, on the cells that passed the outlier filters:

1. **Embedding**: the ``n_features`` most variable genes (Seurat normalised dispersion),
   log1p of counts per 10,000, PCA of the gene-z-scored real cells (sparse, as in
   :mod:`mscflow.qc.doublets`).
2. **Artificial doublets**: ``artificial_ratio`` per real cell. A share ``between_clusters``
   pairs cells of two different k-means clusters of the real cells (picked by size), the
   rest pairs any two cells. Each pair's summed counts are thinned binomially to a library
   gain of 1.2-2.0 times a singlet, as real doublets are (capture is incomplete).
3. **Features** of every real and artificial cell: the share of artificial cells among its
   ``neighbours`` nearest (several k), the distances to its nearest artificial and nearest
   real cell, log library size, log detected genes, a co-expression score of gene pairs
   that are rarely expressed together (cxds, Bais & Kostka 2020) and the first PCs.
4. **Classifier**: scikit-learn's histogram gradient boosting, trained to tell artificial
   from real cells. Every cell is scored out of fold (``folds``), so no cell is scored by a
   model that saw it; over ``rounds`` the real cells called doublets are removed from the
   training set (they are doublets labelled as real).
5. **Threshold**: the score minimising the artificial doublets missed + the real cells
   called + the squared relative deviation of the number called from the expected number
   (zero within ``rate_tolerance`` of the expected rate), so the calls follow the rate the
   sample should hold without being forced to it when the scores say otherwise.

Everything random takes the run's seed: reruns give identical scores and calls.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from mscflow.config import Settings, settings_section
from mscflow.qc.doublets import DoubletResult, scale_rows, seurat_dispersion, zscore_pca_basis

log = logging.getLogger(__name__)

# Library of an artificial doublet relative to the sum of its two cells (a gain of 1.2-2.0
# over a singlet, as measured for 10x doublets).
THINNING_RANGE = (0.6, 1.0)
N_PC_FEATURES = 10
CXDS_GENES = 500


@settings_section("qc.doublet_classifier")
class DoubletClassifierSettings(Settings):
    """Config section ``qc.doublet_classifier`` (keys in the schema; config/README.md)."""


def select_genes(counts: sparse.csr_matrix, n_features: int) -> np.ndarray:
    """Indices of the ``n_features`` genes of highest Seurat normalised dispersion."""
    totals = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    log_mean, disp = seurat_dispersion(scale_rows(counts, float(np.median(totals))))
    disp = np.where(np.isfinite(disp) & (log_mean > 0.0125), disp, -np.inf)
    n_ok = int(np.isfinite(disp).sum())
    return np.sort(np.argsort(-disp, kind="stable")[: min(n_features, n_ok)])


def kmeans_clusters(embedding: np.ndarray, seed: int) -> np.ndarray:
    """K-means (k-means++ start) labels of the real cells: about sqrt(n)/4 clusters, 4-20."""
    from scipy.cluster.vq import kmeans2

    n_clusters = int(np.clip(np.sqrt(len(embedding)) / 4, 4, 20))
    _, labels = kmeans2(embedding, n_clusters, minit="++", seed=seed)
    return labels


def artificial_pairs(clusters: np.ndarray, n_pairs: int, between: float,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Cell pairs: a share ``between`` from two different clusters (each picked by size),
    the rest any two different cells."""
    n = len(clusters)
    labels, codes, sizes = np.unique(clusters, return_inverse=True, return_counts=True)
    n_between = int(round(between * n_pairs)) if len(labels) > 1 else 0
    first = rng.integers(0, n, n_pairs)
    second = rng.integers(0, n - 1, n_pairs)
    second += second >= first  # two different cells
    if n_between:
        prob = sizes / sizes.sum()
        others = np.tile(prob, (len(labels), 1))
        np.fill_diagonal(others, 0.0)
        others_cdf = np.cumsum(others / others.sum(axis=1, keepdims=True), axis=1)
        ca = rng.choice(len(labels), n_between, p=prob)
        cb = (rng.random(n_between)[:, None] > others_cdf[ca]).sum(axis=1)
        cb = np.minimum(cb, len(labels) - 1)
        by_cluster = np.argsort(codes, kind="stable")
        starts = np.r_[0, np.cumsum(sizes)[:-1]]

        def member(c: np.ndarray) -> np.ndarray:
            return by_cluster[starts[c] + (rng.random(len(c)) * sizes[c]).astype(int)]

        first[:n_between], second[:n_between] = member(ca), member(cb)
    return first, second


def make_artificial(counts: sparse.csr_matrix, libraries: np.ndarray, first: np.ndarray,
                    second: np.ndarray, rng: np.random.Generator
                    ) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Summed counts of each pair (the genes of ``counts``) thinned binomially to a random
    share in THINNING_RANGE, and the thinned whole libraries (binomial of the summed ones)."""
    summed = (counts[first] + counts[second]).tocsr()
    keep = rng.uniform(*THINNING_RANGE, summed.shape[0])
    per_entry = np.repeat(keep, np.diff(summed.indptr))
    summed.data = rng.binomial(summed.data.astype(np.int64), per_entry).astype(np.float32)
    summed.eliminate_zeros()
    whole = libraries[first] + libraries[second]
    return summed, rng.binomial(whole.astype(np.int64), keep).astype(np.float64)


def log_normalise(x: sparse.csr_matrix, libraries: np.ndarray) -> sparse.csr_matrix:
    """log1p of counts per 10,000 of each cell's whole library."""
    out = sparse.diags(1e4 / np.maximum(libraries, 1.0)) @ x.astype(np.float64)
    out = sparse.csr_matrix(out)
    out.data = np.log1p(out.data)
    return out


def neighbour_features(points: np.ndarray, is_artificial: np.ndarray,
                       ks: Sequence[int]) -> np.ndarray:
    """Per point: share of artificial cells among its k nearest others for each k, and the
    log distances to the nearest artificial and the nearest real cell (within max k)."""
    from sklearn.neighbors import NearestNeighbors

    k_max = max(ks)
    pts = np.ascontiguousarray(points, dtype=np.float32)
    dist, idx = NearestNeighbors(n_neighbors=k_max + 1, algorithm="brute").fit(pts).kneighbors(pts)
    not_self = idx != np.arange(len(pts))[:, None]
    # drop the point itself (normally the first column; the last one when it is not found)
    order = np.argsort(~not_self, axis=1, kind="stable")[:, :k_max]
    idx = np.take_along_axis(idx, order, axis=1)
    dist = np.take_along_axis(dist, order, axis=1)
    art = is_artificial[idx]
    cum = np.cumsum(art, axis=1)
    shares = [cum[:, k - 1] / k for k in ks]
    far = dist[:, -1]
    nearest_art = np.where(art.any(axis=1), np.where(art, dist, np.inf).min(axis=1), far)
    nearest_real = np.where((~art).any(axis=1), np.where(~art, dist, np.inf).min(axis=1), far)
    return np.column_stack([*shares, np.log1p(nearest_art), np.log1p(nearest_real)])


def cxds_scores(binary_real: sparse.csr_matrix, binary_all: sparse.csr_matrix) -> np.ndarray:
    """cxds co-expression score of every row of ``binary_all``: the sum, over the gene pairs
    it expresses together, of -log P(pair co-expressed this rarely) in the real cells
    (normal approximation of the binomial tail)."""
    from scipy.special import log_ndtr

    n = binary_real.shape[0]
    p = np.asarray(binary_real.mean(axis=0)).ravel()
    observed = np.asarray((binary_real.T @ binary_real).todense())
    both = np.outer(p, p)
    z = (observed - n * both) / np.sqrt(np.maximum(n * both * (1 - both), 1e-12))
    pair = -log_ndtr(z)
    np.fill_diagonal(pair, 0.0)
    dense = binary_all.toarray()
    return 0.5 * ((dense @ pair) * dense).sum(axis=1)


def binary_top_genes(x: sparse.csr_matrix, n_real: int, n_genes: int = CXDS_GENES
                     ) -> sparse.csr_matrix:
    """Detection (0/1) of the genes whose detection varies most in the real cells."""
    detected = (x > 0).astype(np.float64).tocsc()
    p = np.asarray(detected[:n_real].mean(axis=0)).ravel()
    top = np.sort(np.argsort(-(p * (1 - p)), kind="stable")[:n_genes])
    return detected[:, top].tocsr()


def visible_doublet_rate(real: np.ndarray, artificial: np.ndarray) -> float:
    """Doublet rate the scores show: the share of real cells scoring at least the median
    artificial doublet, divided by the share of artificial doublets there (one half)."""
    cut = float(np.median(artificial))
    return float((real >= cut).mean() / max((artificial >= cut).mean(), 1e-9))


def choose_threshold(real: np.ndarray, artificial: np.ndarray, expected_rate: float,
                     max_rate_ratio: float) -> tuple[float, float]:
    """Score cut and target rate: the rate the scores show (:func:`visible_doublet_rate`),
    kept within a factor ``max_rate_ratio`` of the expected rate; the cut calls that share
    of the real cells (those scoring above it)."""
    rate = float(np.clip(visible_doublet_rate(real, artificial),
                         expected_rate / max_rate_ratio, expected_rate * max_rate_ratio))
    n_called = min(int(round(rate * len(real))), len(real) - 1)
    ordered = np.sort(real)[::-1]
    return float(ordered[n_called]) if n_called < len(real) else -np.inf, rate


def out_of_fold_scores(features: np.ndarray, labels: np.ndarray, folds: np.ndarray,
                       train: np.ndarray, params: DoubletClassifierSettings, seed: int
                       ) -> np.ndarray:
    """Doublet probability of every row from the model trained without its fold."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    scores = np.zeros(len(labels))
    for fold in range(params.folds):
        fit = train & (folds != fold)
        model = HistGradientBoostingClassifier(
            max_iter=params.boosting_iterations, learning_rate=params.learning_rate,
            max_leaf_nodes=15, min_samples_leaf=20, l2_regularization=1.0,
            early_stopping=False, random_state=seed)
        model.fit(features[fit], labels[fit])
        scores[folds == fold] = model.predict_proba(features[folds == fold])[:, 1]
    return scores


@dataclass(frozen=True)
class Embedding:
    """Cells embedded for doublet detection: their counts in the selected genes, whole
    libraries, PCA coordinates, and the projection that places other cells alike."""

    counts: sparse.csr_matrix
    libraries: np.ndarray
    coordinates: np.ndarray
    loadings: np.ndarray
    offset: np.ndarray

    def project(self, counts: sparse.csr_matrix, libraries: np.ndarray) -> np.ndarray:
        """Coordinates of other cells (same genes) in this embedding."""
        return np.asarray(log_normalise(counts, libraries) @ self.loadings) - self.offset


def embed_cells(counts: sparse.csr_matrix, n_features: int, n_pcs: int) -> Embedding:
    """PCA of the gene-z-scored log1p(counts per 10,000) of the ``n_features`` most variable
    genes (genes detected in fewer than 3 cells left out)."""
    counts = counts[:, np.asarray((counts > 0).sum(axis=0)).ravel() >= 3]
    genes = select_genes(counts, n_features)
    libraries = np.asarray(counts.sum(axis=1)).ravel().astype(np.float64)
    x = counts[:, genes]
    norm = log_normalise(x, libraries)
    n_pcs = min(n_pcs, len(genes) - 1, x.shape[0] - 1)
    loadings, offset = zscore_pca_basis(norm.toarray().astype(np.float32), n_pcs,
                                        top_only=True)
    coordinates = np.asarray(norm @ loadings) - offset
    return Embedding(x, libraries, coordinates, loadings, offset)


def doublet_features(cells: Embedding, artificial: sparse.csr_matrix,
                     artificial_libraries: np.ndarray, ks: Sequence[int]) -> np.ndarray:
    """Feature matrix of the real cells followed by the artificial doublets."""
    n_real = cells.counts.shape[0]
    embedding = np.vstack([cells.coordinates,
                           cells.project(artificial, artificial_libraries)])
    is_art = np.r_[np.zeros(n_real, bool), np.ones(artificial.shape[0], bool)]
    both = sparse.vstack([cells.counts, artificial], format="csr")
    binary = binary_top_genes(both, n_real)
    return np.column_stack([
        neighbour_features(embedding, is_art, ks),
        np.log1p(np.r_[cells.libraries, artificial_libraries]),
        np.log1p(np.diff(both.indptr)),
        cxds_scores(binary[:n_real], binary),
        embedding[:, : min(N_PC_FEATURES, embedding.shape[1])],
    ])


def train_in_rounds(features: np.ndarray, n_real: int, expected_rate: float,
                    params: DoubletClassifierSettings, seed: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """Out-of-fold scores of every row (real cells first), the threshold and target rate of
    the last round; after each round the likely doublets among the real cells leave the
    training set."""
    labels = (np.arange(len(features)) >= n_real).astype(int)
    folds = rng.integers(0, params.folds, len(labels))
    train = np.ones(len(labels), bool)
    for round_ in range(params.rounds):
        scores = out_of_fold_scores(features, labels, folds, train, params, seed)
        real = scores[:n_real]
        threshold, target_rate = choose_threshold(real, scores[n_real:], expected_rate,
                                                  params.max_rate_ratio)
        n_called = int((real > threshold).sum())
        log.debug("round %d: %d real cells called at %.4f (target rate %.4f)", round_ + 1,
                  n_called, threshold, target_rate)
        # leave out of training the called cells and as many again (the next most likely
        # doublets): a singlet left out costs little, a doublet labelled real teaches the
        # model to miss its kind
        n_out = min(2 * max(n_called, int(round(expected_rate * n_real))), n_real - 1)
        train[:n_real] = real < np.sort(real)[::-1][n_out]
    return scores, threshold, target_rate


def classify_doublets(counts: sparse.spmatrix, *, expected_rate: float,
                      params: DoubletClassifierSettings, random_state: int = 0
                      ) -> DoubletResult:
    """Doublet scores (0-1) and calls of one sample's cells; see the module docstring.

    Cells with fewer than 3 detected genes get score NaN and are not called.
    """
    rng = np.random.default_rng(random_state)
    counts = sparse.csr_matrix(counts, dtype=np.float32)
    ok_cells = np.diff(counts.indptr) >= 3
    cells = embed_cells(counts[ok_cells], params.n_features, params.n_pcs)
    n_real = cells.counts.shape[0]
    clusters = kmeans_clusters(cells.coordinates, random_state)
    n_art = max(int(round(params.artificial_ratio * n_real)), 200)
    first, second = artificial_pairs(clusters, n_art, params.between_clusters, rng)
    artificial, art_libraries = make_artificial(cells.counts, cells.libraries, first, second,
                                                rng)
    ks = [k for k in params.neighbours if k < n_real] or [min(params.neighbours)]
    features = doublet_features(cells, artificial, art_libraries, ks)
    scores, threshold, target_rate = train_in_rounds(features, n_real, expected_rate, params,
                                                     random_state, rng)
    log.info("doublet classifier: %d of %d cells called (target rate %.4f, expected %.4f)",
             int((scores[:n_real] > threshold).sum()), n_real, target_rate, expected_rate)
    result_scores = np.full(counts.shape[0], np.nan)
    result_scores[ok_cells] = scores[:n_real]
    embedding = np.full((counts.shape[0], cells.coordinates.shape[1]), np.nan)
    embedding[ok_cells] = cells.coordinates
    return DoubletResult(result_scores, result_scores > threshold, threshold, scores[n_real:],
                         expected_rate=expected_rate, embedding=embedding)
