"""Numba kernels of the clustering stage: column statistics and in-place scaling of a CSR
matrix (:mod:`mscflow.cluster.core`), per-batch sums of highly variable genes
(:mod:`mscflow.cluster.hvg`) and the k nearest neighbours of a graph
(:mod:`mscflow.cluster.integration_metrics`). Compiled with ``cache=True``: the first
process on a machine pays the compile cost (the cache is keyed by this file's path).
"""

from __future__ import annotations

import heapq

import numba as nb
import numpy as np

# ------------------------------------------- mscflow.cluster.core: scaling without a copy


@nb.njit(cache=True)
def column_means_kernel(indptr, indices, data, n_cols, inv_n):  # pragma: no cover
    mean = np.zeros(n_cols, dtype=np.float32)
    sq = np.zeros(n_cols, dtype=np.float32)
    for row in range(indptr.size - 1):
        for j in range(indptr[row], indptr[row + 1]):
            value = data[j]
            mean[indices[j]] += value * inv_n
            sq[indices[j]] += (value * value) * inv_n
    return mean, sq


@nb.njit(cache=True)
def cap_scale_and_reverse_rows(indptr, indices, data, caps, factors):  # pragma: no cover
    for row in range(indptr.size - 1):
        for j in range(indptr[row], indptr[row + 1]):
            value = min(data[j], caps[indices[j]])
            data[j] = value * factors[indices[j]]
        left, right = indptr[row], indptr[row + 1] - 1
        while left < right:
            indices[left], indices[right] = indices[right], indices[left]
            data[left], data[right] = data[right], data[left]
            left += 1
            right -= 1


# ----------------------------------------- mscflow.cluster.hvg: per-batch sums in one pass


@nb.njit(cache=True)
def accumulate(data, indices, indptr, start, stop, offset, batch, seen, sums, squares,
                expressed):  # pragma: no cover - compiled
    """Add rows ``start:stop`` (values ``data``, already ``expm1``, from ``offset``) to the
    per-(batch, thread slot, gene) sums; a batch's k-th row goes to slot k % n_threads, as
    scanpy's ``sparse_mean_var_minor_axis`` deals rows to its threads."""
    n_slots = sums.shape[1]
    for r in range(start, stop):
        b = batch[r]
        slot = seen[b] % n_slots
        seen[b] += 1
        for j in range(indptr[r], indptr[r + 1]):
            gene = indices[j]
            value = data[j - offset]
            sums[b, slot, gene] += value
            squares[b, slot, gene] += value * value
            if value > 0:
                expressed[b, gene] += 1


@nb.njit(cache=True)
def mean_var(sums, squares, n_rows):  # pragma: no cover - compiled
    """Mean and variance per gene from one batch's slot sums, as scanpy combines them."""
    n_genes = sums.shape[1]
    means = np.zeros(n_genes)
    variances = np.zeros(n_genes)
    for c in range(n_genes):
        total = sums[:, c].sum()
        means[c] = total / n_rows
        variances[c] = squares[:, c].sum() / n_rows - (total / n_rows) ** 2
    return means, variances


# ------------------------------------ mscflow.cluster.integration_metrics: graph neighbours


@nb.njit(cache=True)
def graph_knn(indptr, indices, weights, k):  # pragma: no cover - compiled
    n = len(indptr) - 1
    out_idx = np.full((n, k), -1, np.int64)
    out_dist = np.full((n, k), np.inf)
    best = np.full(n, np.inf)
    seen = np.full(n, -1, np.int64)  # source whose search last touched the node
    done = np.full(n, -1, np.int64)
    for s in range(n):
        heap = [(0.0, s)]
        best[s] = 0.0
        seen[s] = s
        found = 0
        while len(heap) > 0 and found < k:
            d, u = heapq.heappop(heap)
            if done[u] == s:
                continue
            done[u] = s
            if u != s:
                out_idx[s, found] = u
                out_dist[s, found] = d
                found += 1
            for e in range(indptr[u], indptr[u + 1]):
                v = indices[e]
                nd = d + weights[e]
                if seen[v] != s or nd < best[v]:
                    seen[v] = s
                    best[v] = nd
                    heapq.heappush(heap, (nd, v))
    return out_dist, out_idx
