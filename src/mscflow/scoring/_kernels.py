"""Numba kernels behind :mod:`mscflow.scoring.core`.

All kernels read CSR ``data``/``indices``/``indptr`` as given (float32 or float64 data,
int32 or int64 indices) and never densify or upcast the matrix.  They are compiled with
``cache=True`` so only the first process on a machine pays the compile cost.
"""

from __future__ import annotations

import numba as nb
import numpy as np

# ---------------------------------------------------------------------------------------
# Pass 1: per-gene statistics
# ---------------------------------------------------------------------------------------
# scanpy sums gene columns with scipy's ``ones @ X``, i.e. sequentially over rows in the
# matrix dtype (float32 for float32 data).  To reproduce those bits exactly while using all
# threads, every thread owns a contiguous range of genes and walks all rows, touching only
# the slice of each (sorted) row that falls in its range: per gene the additions then
# happen in the same order as scipy's.  Rows with unsorted indices are detected and the
# caller falls back to the sequential kernel.

STAT_UNSORTED = 0  # 1.0 if a row slice held a gene outside the thread's range
STAT_MAX = 1  # largest value seen
STAT_NONINT = 2  # 1.0 if a non-integer value was seen
STAT_COUNT = 3  # number of stored entries processed
STAT_MIN = 4  # smallest value seen
N_STAT = 5


@nb.njit(cache=True, nogil=True, inline="always")
def _lower_bound(indices, lo, hi, value):
    """First position in ``indices[lo:hi]`` (sorted) whose value is >= ``value``."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if indices[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@nb.njit(cache=True, nogil=True, inline="always")
def _stats_slice(
    data, indices, indptr, g_lo, g_hi, sums, sums64, sumsq64, nnz, want64, want_nnz, out
):
    """Accumulate statistics of genes in ``[g_lo, g_hi)`` over all rows, sequential in rows.

    Always inlined with literal ``want64``/``want_nnz`` so unused statistics cost nothing.
    The only per-entry check is one unsigned range compare: if every thread sees only
    entries of its own gene range and the counts add up to ``nnz``, each entry was added
    exactly once and in storage order, which is all bit-exactness needs (sortedness is not
    required; unsorted rows usually fail the check and go to the sequential kernel).
    """
    n_rows = indptr.shape[0] - 1
    width = np.uint64(g_hi - g_lo)
    base = np.int64(g_lo)
    bad = False
    count = 0
    for r in range(n_rows):
        start = indptr[r]
        stop = indptr[r + 1]
        lo = _lower_bound(indices, start, stop, g_lo)
        hi = _lower_bound(indices, lo, stop, g_hi)
        for k in range(lo, hi):
            g = np.int64(indices[k])
            bad |= np.uint64(g - base) >= width
            v = data[k]
            gu = np.uint64(g)  # unsigned index: numba emits no wraparound check
            sums[gu] += v
            if want64:
                v64 = np.float64(v)
                sums64[gu] += v64
                sumsq64[gu] += v64 * v64
            if want_nnz:
                nnz[gu] += v != 0
        count += hi - lo
    out[STAT_UNSORTED] = 1.0 if bad else 0.0
    out[STAT_COUNT] = count


@nb.njit(parallel=True, cache=True)
def gene_sums_split(data, indices, indptr, bounds, sums):
    """Per-gene sums in the matrix dtype, in scipy's (row) order; genes split over threads.

    Returns ``(n_parts, N_STAT)`` flags; see the ``STAT_*`` constants.
    """
    n_parts = bounds.shape[0] - 1
    res = np.zeros((n_parts, N_STAT))
    for p in nb.prange(n_parts):
        _stats_slice(
            data, indices, indptr, bounds[p], bounds[p + 1], sums, sums, sums, sums,
            False, False, res[p],
        )
    return res


@nb.njit(parallel=True, cache=True)
def gene_nnz_split(data, indices, indptr, bounds, sums, nnz):
    """Like :func:`gene_sums_split`, also counting non-zero values per gene."""
    n_parts = bounds.shape[0] - 1
    res = np.zeros((n_parts, N_STAT))
    for p in nb.prange(n_parts):
        _stats_slice(
            data, indices, indptr, bounds[p], bounds[p + 1], sums, sums, sums, nnz,
            False, True, res[p],
        )
    return res


@nb.njit(parallel=True, cache=True)
def gene_moments_split(data, indices, indptr, bounds, sums, sums64, sumsq64):
    """Like :func:`gene_sums_split`, also float64 sums and sums of squares per gene."""
    n_parts = bounds.shape[0] - 1
    res = np.zeros((n_parts, N_STAT))
    for p in nb.prange(n_parts):
        _stats_slice(
            data, indices, indptr, bounds[p], bounds[p + 1], sums, sums64, sumsq64, sums,
            True, False, res[p],
        )
    return res


@nb.njit(cache=True)
def gene_stats_sequential(data, indices, indptr, sums, sums64, sumsq64, nnz, want64):
    """Single-threaded fallback of :func:`gene_stats_split` for unsorted indices."""
    res = np.zeros((1, N_STAT))
    vmax = -np.inf
    vmin = np.inf
    nonint = False
    n_rows = indptr.shape[0] - 1
    for r in range(n_rows):
        for k in range(indptr[r], indptr[r + 1]):
            g = indices[k]
            v = data[k]
            sums[g] += v
            if want64:
                v64 = np.float64(v)
                sums64[g] += v64
                sumsq64[g] += v64 * v64
            if v != 0:
                nnz[g] += 1
            if v > vmax:
                vmax = v
            if v < vmin:
                vmin = v
            if v != np.floor(v):
                nonint = True
    res[0, STAT_MAX] = vmax
    res[0, STAT_MIN] = vmin
    res[0, STAT_NONINT] = 1.0 if nonint else 0.0
    res[0, STAT_COUNT] = indptr[n_rows] - indptr[0]
    return res


@nb.njit(parallel=True, cache=True)
def gene_stats_dense(x, bounds, sums, sums64, sumsq64, nnz, want64):
    """Dense version of :func:`gene_stats_split`: columns split, rows walked in order.

    Matches ``np.sum(x, axis=0)`` bit for bit for C-contiguous ``x`` (numpy reduces the
    outer axis sequentially).
    """
    n_parts = bounds.shape[0] - 1
    n_rows = x.shape[0]
    res = np.zeros((n_parts, N_STAT))
    for p in nb.prange(n_parts):
        g_lo = bounds[p]
        g_hi = bounds[p + 1]
        vmax = -np.inf
        vmin = np.inf
        nonint = False
        for r in range(n_rows):
            for g in range(g_lo, g_hi):
                v = x[r, g]
                sums[g] += v
                if want64:
                    v64 = np.float64(v)
                    sums64[g] += v64
                    sumsq64[g] += v64 * v64
                if v != 0:
                    nnz[g] += 1
                vmax = max(vmax, v)
                vmin = min(vmin, v)
                if v != np.floor(v):
                    nonint = True
        res[p, STAT_MAX] = vmax
        res[p, STAT_MIN] = vmin
        res[p, STAT_NONINT] = 1.0 if nonint else 0.0
        res[p, STAT_COUNT] = n_rows * (g_hi - g_lo)
    return res


# ---------------------------------------------------------------------------------------
# Pass 2a: linear scores (scanpy, mean, zscore): out[r, :] = offset + sum_g x[r, g] * W[g, :]
# ---------------------------------------------------------------------------------------
# W is stored compactly: ``gene_row[g]`` is the row of ``w`` holding gene g's weights for
# all sets (sets contiguous, control genes folded in as negative weights) or -1 for genes
# in no set, so the inner loop is one predictable branch plus a vectorised multiply-add.

ROW_BLOCK = 512
LANES = 8  # weight rows are padded to a multiple of this many sets (one AVX-512 register)


@nb.njit(cache=True, nogil=True, inline="always")
def _gather_active(data, indices, lo, hi, gene_row, act_j, act_v):
    """Branch-free compaction of a row's entries in weighted genes; returns their number."""
    n_act = 0
    for k in range(lo, hi):
        j = gene_row[np.uint64(indices[k])]
        act_j[n_act] = j
        act_v[n_act] = data[k]
        n_act += j >= 0
    return n_act


@nb.njit(cache=True, nogil=True)
def _score_row(act_j, act_v, n_act, w2, acc):
    """``acc[:] = sum_q act_v[q] * w2[act_j[q], :]`` over a row's active entries.

    The lane loop has a runtime trip count and no reduction, so LLVM's loop vectoriser turns
    it into SIMD multiply-adds over the contiguous weight row (numba leaves the SLP
    vectoriser off, so fixed scalar accumulators would stay scalar).  Entries are taken four
    at a time so the accumulators go through memory once per four entries.  The order of
    the additions depends only on the row, never on the SIMD width, threads or chunking.
    """
    n_pad = w2.shape[1]
    for lane in range(n_pad):
        acc[lane] = 0.0
    q = 0
    while q + 3 < n_act:  # four entries per accumulator update: shorter store->load chain
        v0 = act_v[q]
        v1 = act_v[q + 1]
        v2 = act_v[q + 2]
        v3 = act_v[q + 3]
        w0 = w2[np.uint64(act_j[q])]
        w1 = w2[np.uint64(act_j[q + 1])]
        w2_ = w2[np.uint64(act_j[q + 2])]
        w3 = w2[np.uint64(act_j[q + 3])]
        for lane in range(n_pad):
            acc[lane] += (v0 * w0[lane] + v1 * w1[lane]) + (v2 * w2_[lane] + v3 * w3[lane])
        q += 4
    while q < n_act:
        v = act_v[q]
        wrow = w2[np.uint64(act_j[q])]
        for lane in range(n_pad):
            acc[lane] += v * wrow[lane]
        q += 1


@nb.njit(parallel=True, cache=True)
def score_linear_csr(data, indices, indptr, gene_row, w2, offset, out):
    """Write linear scores of every CSR row into ``out`` (rows x sets, float64).

    ``w2[j, s]`` is the weight of active gene ``j`` (``gene_row[g]``, -1 = in no set) for
    set ``s``; columns beyond ``out.shape[1]`` are zero padding.  Each row's active entries
    are gathered once (branch-free), then every entry adds its weight row to the row's
    accumulators.  Rows are independent, so results do not depend on the number of threads
    or on chunking.
    """
    n_rows = indptr.shape[0] - 1
    n_sets = out.shape[1]
    n_blocks = (n_rows + ROW_BLOCK - 1) // ROW_BLOCK
    for b in nb.prange(n_blocks):
        r0 = b * ROW_BLOCK
        r1 = min(r0 + ROW_BLOCK, n_rows)
        max_len = 0
        for r in range(r0, r1):
            max_len = max(max_len, indptr[r + 1] - indptr[r])
        act_j = np.empty(max_len, dtype=np.int32)
        act_v = np.empty(max_len, dtype=np.float64)
        acc = np.empty(w2.shape[1], dtype=np.float64)
        for r in range(r0, r1):
            n_act = _gather_active(
                data, indices, indptr[r], indptr[r + 1], gene_row, act_j, act_v
            )
            _score_row(act_j, act_v, n_act, w2, acc)
            for s in range(n_sets):
                out[r, s] = acc[s] + offset[s]


# ---------------------------------------------------------------------------------------
# Pass 2b: AUCell
# ---------------------------------------------------------------------------------------
# Genes of a cell are ranked by decreasing value, ties broken by a fixed gene order
# ``tiepos`` (rank 1 = highest).  A set member with rank r <= n_up contributes n_up - r to
# its set's AUC, which is what decoupler's recovery-curve sum reduces to.  Only members are
# ranked: the member values present in the row are sorted, then each stored entry of the
# row adds one to the rank of every member it precedes (found by binary search), so the
# zeros of the row are never sorted or touched.


BUCKETS_PER_MEMBER = 8


@nb.njit(cache=True, nogil=True, inline="always")
def _bucket(v, top, scale, last_b):
    """Bucket of value ``v``: 0 above ``top``, then ``scale`` buckets per unit, clamped."""
    x = (top - np.float64(v)) * scale + 1.0
    x = min(max(x, 0.0), np.float64(last_b))
    return int(x)


@nb.njit(cache=True, nogil=True, inline="always")
def _precedes(va, ta, vb, tb):
    """True if gene (va, ta) ranks before gene (vb, tb): higher value, then lower tiepos."""
    return va > vb or (va == vb and ta < tb)


@nb.njit(cache=True, nogil=True)
def _aucell_row(
    data, indices, lo, hi, member_of, tiepos, mem_tiepos, mem_set_ptr, mem_sets, n_up,
    n_kept, mv, mt, mm, diff, first, stamp, row_id, auc,
):
    """Accumulate un-normalised AUCs of one CSR row (entries ``lo:hi``) into ``auc``."""
    n_members = mem_tiepos.shape[0]
    m = 0
    n_pos = 0
    n_stored_nz = 0
    for k in range(lo, hi):
        v = data[k]
        if v == 0:
            continue
        n_stored_nz += 1
        if v > 0:
            n_pos += 1
        g = indices[k]
        j = member_of[g]
        if j >= 0:
            # insertion sort by (value desc, tiepos asc)
            t = tiepos[g]
            q = m
            while q > 0 and _precedes(v, t, mv[q - 1], mt[q - 1]):
                mv[q] = mv[q - 1]
                mt[q] = mt[q - 1]
                mm[q] = mm[q - 1]
                q -= 1
            mv[q] = v
            mt[q] = t
            mm[q] = j
            stamp[j] = row_id
            m += 1
    n_zero = n_kept - n_stored_nz
    if m > 0:
        for q in range(m + 1):
            diff[q] = 0
        v_last = mv[m - 1]
        v_first = mv[0]
        # Bucket table over the member values: bucket 0 is above v_first, buckets
        # 1..n_b+1 span [v_first, v_last] (members live there), n_b+2 is below v_last.
        # Members of bucket b are first[b]:first[b+1]; most buckets are empty, so most
        # entries find their position with one lookup and no comparison.
        n_b = BUCKETS_PER_MEMBER * m
        span = np.float64(v_first) - np.float64(v_last)
        scale = n_b / span if span > 0 else 0.0
        top = np.float64(v_first)
        last_b = n_b + 2
        q = 0
        for bkt in range(last_b + 1):
            while q < m and _bucket(mv[q], top, scale, last_b) < bkt:
                q += 1
            first[bkt] = q
        first[last_b + 1] = m
        for k in range(lo, hi):
            v = data[k]
            bkt = _bucket(v, top, scale, last_b)
            a = first[bkt]
            end = first[bkt + 1]
            while a < end:
                mva = mv[a]
                if v > mva or (v == mva and tiepos[indices[k]] < mt[a]):
                    break
                a += 1
            diff[m if v == 0 else a] += 1
        before = 0
        for q in range(m):
            before += diff[q]
            rank = 1 + before
            if mv[q] < 0:
                rank += n_zero
            if rank < n_up:
                contrib = n_up - rank
                j = mm[q]
                for z in range(mem_set_ptr[j], mem_set_ptr[j + 1]):
                    auc[mem_sets[z]] += contrib
    if n_pos + 1 < n_up:
        # members whose value is zero in this row may still rank in the top n_up
        nz_t = np.empty(n_stored_nz, dtype=np.int64)
        c = 0
        for k in range(lo, hi):
            if data[k] != 0:
                nz_t[c] = tiepos[indices[k]]
                c += 1
        nz_t.sort()
        limit = n_up - n_pos - 1 + n_stored_nz  # tiepos beyond this cannot reach n_up
        for j in range(n_members):
            t = mem_tiepos[j]
            if t >= limit or stamp[j] == row_id:
                continue
            n_before = 0
            a = 0
            b = n_stored_nz
            while a < b:
                mid = (a + b) >> 1
                if nz_t[mid] < t:
                    a = mid + 1
                else:
                    b = mid
            n_before = a
            rank = n_pos + 1 + t - n_before
            if rank < n_up:
                contrib = n_up - rank
                for z in range(mem_set_ptr[j], mem_set_ptr[j + 1]):
                    auc[mem_sets[z]] += contrib


@nb.njit(parallel=True, cache=True)
def aucell_csr(
    data, indices, indptr, member_of, tiepos, mem_tiepos, mem_set_ptr, mem_sets, n_up,
    n_kept, max_auc, out,
):
    """AUCell scores of every CSR row into ``out`` (rows x sets); empty rows get NaN."""
    n_rows = indptr.shape[0] - 1
    n_sets = out.shape[1]
    n_members = mem_tiepos.shape[0]
    n_blocks = (n_rows + ROW_BLOCK - 1) // ROW_BLOCK
    for b in nb.prange(n_blocks):
        r0 = b * ROW_BLOCK
        r1 = min(r0 + ROW_BLOCK, n_rows)
        mv = np.empty(n_members, dtype=data.dtype)
        mt = np.empty(n_members, dtype=np.int64)
        mm = np.empty(n_members, dtype=np.int64)
        diff = np.empty(n_members + 1, dtype=np.int64)
        first = np.empty(BUCKETS_PER_MEMBER * n_members + 4, dtype=np.int64)
        stamp = np.full(n_members, -1, dtype=np.int64)
        auc = np.empty(n_sets, dtype=np.float64)
        for r in range(r0, r1):
            lo = indptr[r]
            hi = indptr[r + 1]
            empty = True
            for k in range(lo, hi):
                if data[k] != 0:
                    empty = False
                    break
            if empty:
                for s in range(n_sets):
                    out[r, s] = np.nan
                continue
            for s in range(n_sets):
                auc[s] = 0.0
            _aucell_row(
                data, indices, lo, hi, member_of, tiepos, mem_tiepos, mem_set_ptr, mem_sets,
                n_up, n_kept, mv, mt, mm, diff, first, stamp, r, auc,
            )
            for s in range(n_sets):
                out[r, s] = auc[s] / max_auc[s]
