"""PCA of the highly variable genes read in blocks of cells: a randomised solver that never
copies the HVG matrix.

The in-memory path (:func:`mscflow.cluster.core.pca`) copies the HVG columns of every cell, scales
them in place and hands them to ARPACK: at 868k cells that copy raised the cluster job from
10.0 to 14.0 GB. Here the centred, scaled and capped HVG matrix ``A`` exists only as blocks of
10,000 cells cut from ``adata.X`` when a product needs them; the randomised SVD (Halko,
Martinsson & Tropp 2011, with QR between power iterations) needs ``A @ Q`` and ``A.T @ Y`` a
few times (2 + 2 x ``n_iter`` + 1 passes over the cells). Its accuracy against ARPACK is
measured in ``benchmarks/pca_solvers.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import sparse

BLOCK_CELLS = 10_000


@dataclass
class ScaledHvgMatrix:
    """``A = min(X[:, genes], caps) * scale - means``, as blocks of rows of ``x``."""

    x: sparse.csr_matrix
    genes: np.ndarray
    caps: np.ndarray
    scale: np.ndarray
    means: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.x.shape[0], len(self.genes)

    def blocks(self) -> Iterator[tuple[int, int, sparse.csr_matrix]]:
        """(first row, end row, scaled and capped block without centring)."""
        for start in range(0, self.x.shape[0], BLOCK_CELLS):
            stop = min(start + BLOCK_CELLS, self.x.shape[0])
            block = self.x[start:stop][:, self.genes].astype(np.float64)
            block.data = np.minimum(block.data, self.caps[block.indices])
            block.data *= self.scale[block.indices]
            yield start, stop, block

    def matmat(self, q: np.ndarray) -> np.ndarray:
        """``A @ q`` (cells x columns of q)."""
        out = np.empty((self.shape[0], q.shape[1]))
        shift = self.means @ q
        for start, stop, block in self.blocks():
            out[start:stop] = block @ q - shift
        return out

    def rmatmat(self, y: np.ndarray) -> np.ndarray:
        """``A.T @ y`` (genes x columns of y)."""
        out = np.zeros((self.shape[1], y.shape[1]))
        for start, stop, block in self.blocks():
            out += block.T @ y[start:stop]
        return out - np.outer(self.means, y.sum(axis=0))


def column_moments(x: sparse.csr_matrix, genes: np.ndarray, caps: np.ndarray | None = None,
                   scale: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance (ddof 1) of each of ``genes`` over the cells of ``x``, after the
    optional caps and scale; one pass over blocks of cells."""
    n_genes = len(genes)
    matrix = ScaledHvgMatrix(x, genes, np.full(n_genes, np.inf) if caps is None else caps,
                             np.ones(n_genes) if scale is None else scale)
    sums, squares = np.zeros(n_genes), np.zeros(n_genes)
    for _, _, block in matrix.blocks():
        sums += np.asarray(block.sum(axis=0)).ravel()
        squares += np.asarray(block.multiply(block).sum(axis=0)).ravel()
    n = x.shape[0]
    mean = sums / n
    return mean, np.maximum(squares / n - mean**2, 0) * n / max(n - 1, 1)


def zscore_caps(mean: np.ndarray, var: np.ndarray, max_value: float | None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per gene: the sd the PCA divides by (constant genes: 1) and the cap on its values
    (mean + ``max_value`` x sd; infinite without ``max_value``)."""
    sd = np.sqrt(var)
    sd[sd == 0] = 1.0
    caps = np.full(len(sd), np.inf) if max_value is None else mean + max_value * sd
    return sd, caps


def randomized_pca(x: sparse.csr_matrix, genes: np.ndarray, n_comps: int, *,
                   zscore: bool, max_value: float | None, random_state: int,
                   n_oversamples: int = 10, n_iter: int = 7
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PCA of the HVG columns ``genes`` of CSR ``x``, each gene z-scored (ddof 1) and
    capped at mean + ``max_value`` x sd when ``zscore`` (as :func:`mscflow.cluster.core.pca`),
    centred implicitly.

    Returns (cell scores ``n x n_comps`` float32, loadings ``genes x n_comps``, variance
    and variance ratio per component), each component's sign set so that its largest
    loading is positive.
    """
    n_genes = len(genes)
    caps, scale = np.full(n_genes, np.inf), np.ones(n_genes)
    if zscore:
        sd, caps = zscore_caps(*column_moments(x, genes), max_value)
        scale = 1 / sd
    means, variances = column_moments(x, genes, caps, scale)
    matrix = ScaledHvgMatrix(x, genes, caps, scale, means)
    rng = np.random.default_rng(random_state)
    width = min(n_comps + n_oversamples, n_genes)
    q, _ = np.linalg.qr(matrix.matmat(rng.standard_normal((n_genes, width))))
    for _ in range(n_iter):
        z, _ = np.linalg.qr(matrix.rmatmat(q))
        q, _ = np.linalg.qr(matrix.matmat(z))
    small = matrix.rmatmat(q).T  # Q.T @ A, width x genes
    u_small, s, vt = np.linalg.svd(small, full_matrices=False)
    u_small, s, vt = u_small[:, :n_comps], s[:n_comps], vt[:n_comps]
    signs = np.sign(vt[np.arange(len(s)), np.abs(vt).argmax(axis=1)])
    signs[signs == 0] = 1
    scores = (q @ (u_small * signs)) * s
    variance = s**2 / (x.shape[0] - 1)
    return (scores.astype(np.float32), (vt * signs[:, None]).T, variance,
            variance / variances.sum())
