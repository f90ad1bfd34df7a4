"""Tests for mscflow.scoring.core: parity with scanpy/decoupler, brute-force references,
chunking."""

from __future__ import annotations

import warnings

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mscflow.scoring.core import decoupler_n_up, score_gene_sets

N_CELLS, N_GENES = 300, 400


def make_matrix(
    n_cells: int = N_CELLS,
    n_genes: int = N_GENES,
    density: float = 0.1,
    seed: int = 0,
    dtype=np.float32,
    round_to: int | None = None,
) -> sp.csr_matrix:
    """Log-normalised-looking CSR with an empty row, an all-zero gene and optional ties."""
    rng = np.random.default_rng(seed)
    x = sp.random(n_cells, n_genes, density=density, format="csr", random_state=rng)
    x.data = np.log1p(x.data * 20)
    if round_to is not None:
        x.data = np.round(x.data, round_to) + 0.1
    x = x.tolil()
    x[3, :] = 0  # empty cell
    x[:, 5] = 0  # gene never detected
    x = x.tocsr().astype(dtype)
    x.eliminate_zeros()
    x.sort_indices()
    return x


def gene_names(n: int = N_GENES) -> list[str]:
    return [f"G{i}" for i in range(n)]


def make_sets(seed: int = 0, n_genes: int = N_GENES) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    genes = np.array(gene_names(n_genes))
    return {
        "big": list(rng.choice(genes, 40, replace=False)),
        "small": list(rng.choice(genes, 6, replace=False)) + ["G5"],
        "one": [str(genes[7])],
        "mid": list(rng.choice(genes, 15, replace=False)),
    }


def make_adata(x, seed: int = 0) -> ad.AnnData:
    a = ad.AnnData(x)
    a.var_names = gene_names(x.shape[1])
    a.obs_names = [f"c{i}" for i in range(x.shape[0])]
    return a


# ---------------------------------------------------------------------------------------
# Brute-force references on dense numpy arrays
# ---------------------------------------------------------------------------------------


def ref_mean(dense: np.ndarray, idx: list[int], w: np.ndarray) -> np.ndarray:
    return (dense[:, idx].astype(np.float64) * w).sum(1) / np.abs(w).sum()


def ref_zscore(dense: np.ndarray, idx: list[int], w: np.ndarray) -> np.ndarray:
    x = dense[:, idx].astype(np.float64)
    sd = x.std(0, ddof=1)
    z = np.where(sd > 0, (x - x.mean(0)) / np.where(sd > 0, sd, 1), 0.0)
    return (z * w).sum(1) / np.abs(w).sum()


def ref_aucell(dense: np.ndarray, sets: dict[str, list[int]], n_up: int | None) -> np.ndarray:
    """Full sort of every row, decoupler's tie order, recovery-curve area by definition."""
    kept = np.flatnonzero((dense != 0).any(0))
    nk = len(kept)
    nu = int(np.clip(np.ceil(0.05 * nk), 2, nk)) if n_up is None else n_up
    perm = np.random.default_rng(0).choice(np.arange(nk), nk, replace=False)
    cols = kept[perm]  # decoupler's shuffled feature order
    out = np.full((dense.shape[0], len(sets)), np.nan)
    for i, row in enumerate(dense[:, cols]):
        if not row.any():
            continue
        order = np.argsort(-row, kind="stable")
        rank = np.empty(nk, dtype=np.int64)
        rank[order] = np.arange(1, nk + 1)
        rank_of = dict(zip(cols.tolist(), rank.tolist(), strict=True))
        for s, idx in enumerate(sets.values()):
            members = [g for g in idx if g in rank_of]
            r = np.sort([rank_of[g] for g in members])
            r = r[r <= nu]
            curve = np.zeros(nu)  # recovered fraction at each rank 1..nu
            for x in r:
                curve[x - 1 :] += 1
            k = min(len(members), nu - 1)
            max_auc = sum(nu - t for t in range(1, k + 1))
            out[i, s] = curve[:-1].sum() / max_auc
    return out


def ref_scanpy(dense: np.ndarray, set_idx: list[int], seed: int, n_bins=25, ctrl_size=50):
    """Seurat/scanpy score from scratch: sequential float sums, min-rank bins, sampled ctrls."""
    n, g = dense.shape
    sums = np.zeros(g, dtype=dense.dtype)
    for row in dense:  # sequential in the matrix dtype, like scipy's ones @ X
        sums += row
    means = sums.astype(np.float64) / n
    rank = pd.Series(means).rank(method="min").to_numpy()
    cut = rank // int(np.round(g / (n_bins - 1)))
    rs = np.random.RandomState(seed)
    ctrl: set[int] = set()
    for c in np.unique(cut[set_idx]):
        pool = np.flatnonzero(cut == c)
        if ctrl_size < len(pool):
            pool = pool[rs.choice(len(pool), ctrl_size, replace=False)]
        ctrl |= set(pool.tolist()) - set(set_idx)
    ctrl_l = sorted(ctrl)
    x = dense.astype(np.float64)
    return x[:, set_idx].mean(1) - x[:, ctrl_l].mean(1)


# ---------------------------------------------------------------------------------------
# Parity with scanpy and decoupler
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 42])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dense", [False, True])
def test_scanpy_parity(seed: int, dtype, dense: bool) -> None:
    x = make_matrix(seed=seed, dtype=dtype)
    a = make_adata(x.toarray() if dense else x)
    sets = make_sets(seed)
    sets["small"] = sets["small"][:-1]  # scanpy keeps undetected genes; fine either way
    ours = score_gene_sets(a, sets, random_state=seed, ctrl_size=30)
    assert list(ours.columns) == list(sets)
    assert ours.index.equals(a.obs_names)
    for name, genes in sets.items():
        sc.tl.score_genes(a, genes, random_state=seed, ctrl_size=30, score_name=name)
        np.testing.assert_allclose(ours[name], a.obs[name], atol=1e-5, rtol=0, err_msg=name)


def test_scanpy_parity_gene_pool_bins_and_missing_genes() -> None:
    x = make_matrix(seed=3)
    a = make_adata(x)
    pool = gene_names()[::2] + gene_names()[1:60:2]
    sets = {"a": ["G0", "G2", "G4", "G10", "NOPE"], "b": ["G20", "G40", "G44"]}
    with pytest.warns(UserWarning, match="NOPE"):
        ours = score_gene_sets(a, sets, gene_pool=pool, n_bins=10, ctrl_size=20, random_state=5)
    for name, genes in sets.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sc.tl.score_genes(
                a, genes, gene_pool=pool, n_bins=10, ctrl_size=20, random_state=5,
                score_name=name,
            )
        np.testing.assert_allclose(ours[name], a.obs[name], atol=1e-5, rtol=0)


@pytest.mark.parametrize("n_up", [None, 15, 250])
@pytest.mark.parametrize("round_to", [None, 1])
def test_aucell_parity_with_decoupler(n_up, round_to) -> None:
    dc = pytest.importorskip("decoupler")
    x = make_matrix(seed=2, round_to=round_to)
    a = make_adata(x)
    sets = make_sets(2)
    ours = score_gene_sets(a, sets, "aucell", n_up=n_up)
    net = pd.DataFrame([(k, g) for k, v in sets.items() for g in v], columns=["source", "target"])
    b = a.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = dc.mt.aucell(b, net, tmin=1, n_up=n_up)
    es = (res if res is not None else b).obsm["score_aucell"][list(sets)]
    assert ours.loc["c3"].isna().all()  # decoupler drops empty cells; we return NaN
    np.testing.assert_allclose(ours.loc[es.index].to_numpy(), es.to_numpy(), atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------
# Brute-force references
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 9])
def test_scanpy_method_matches_bruteforce(seed: int) -> None:
    x = make_matrix(seed=seed)
    sets = make_sets(seed)
    ours = score_gene_sets(x, sets, var_names=gene_names(), random_state=seed)
    dense = x.toarray()
    for name, genes in sets.items():
        idx = [int(g[1:]) for g in genes]
        ref = ref_scanpy(dense, sorted(set(idx)), seed)
        np.testing.assert_allclose(ours[name], ref, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("method", ["mean", "zscore"])
def test_linear_methods_match_bruteforce_with_weights(method: str) -> None:
    x = make_matrix(seed=4, dtype=np.float64)
    rng = np.random.default_rng(4)
    sets: dict = make_sets(4)
    w = rng.normal(size=4)
    sets["weighted"] = {f"G{i}": float(v) for i, v in zip([1, 5, 9, 30], w, strict=True)}
    ours = score_gene_sets(x, sets, method, var_names=gene_names())
    dense = x.toarray()
    ref_fn = ref_mean if method == "mean" else ref_zscore
    for name, genes in sets.items():
        if isinstance(genes, dict):
            idx, w = [int(g[1:]) for g in genes], np.array(list(genes.values()))
        else:
            idx, w = [int(g[1:]) for g in genes], np.ones(len(genes))
        np.testing.assert_allclose(ours[name], ref_fn(dense, idx, w), atol=1e-9, err_msg=name)


@pytest.mark.parametrize("n_up", [None, 7, 60])
def test_aucell_matches_bruteforce(n_up) -> None:
    x = make_matrix(n_cells=80, n_genes=120, density=0.2, seed=5, round_to=0)
    sets = make_sets(5, n_genes=120)
    ours = score_gene_sets(x, sets, "aucell", var_names=gene_names(120), n_up=n_up)
    idx = {k: [int(g[1:]) for g in v] for k, v in sets.items()}
    ref = ref_aucell(x.toarray(), idx, n_up)
    np.testing.assert_allclose(ours.to_numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("method", ["scanpy", "aucell", "mean", "zscore"])
def test_dense_equals_sparse_and_chunk_boundary_mid_set(method: str) -> None:
    x = make_matrix(seed=6)
    sets = make_sets(6)
    kw = {"var_names": gene_names()}
    full = score_gene_sets(x, sets, method, **kw)
    dense = score_gene_sets(x.toarray(), sets, method, **kw)
    chunked = score_gene_sets(x, sets, method, chunk_size=7, **kw)
    np.testing.assert_allclose(dense.to_numpy(), full.to_numpy(), atol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(chunked.to_numpy(), full.to_numpy())


# ---------------------------------------------------------------------------------------
# Storage variants
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["scanpy", "aucell", "zscore"])
def test_int64_indices_and_unsorted_rows(method: str) -> None:
    x = make_matrix(seed=7)
    sets = make_sets(7)
    kw = {"var_names": gene_names()}
    ref = score_gene_sets(x, sets, method, **kw)
    x64 = x.copy()
    x64.indices = x.indices.astype(np.int64)  # scipy would downcast in the constructor
    x64.indptr = x.indptr.astype(np.int64)
    assert x64.indices.dtype == np.int64
    np.testing.assert_array_equal(score_gene_sets(x64, sets, method, **kw), ref)
    # reverse the entries of every row: same matrix, unsorted indices
    data, indices = x.data.copy(), x.indices.copy()
    for r in range(x.shape[0]):
        a, b = x.indptr[r], x.indptr[r + 1]
        data[a:b], indices[a:b] = data[a:b][::-1], indices[a:b][::-1]
    xu = sp.csr_matrix((data, indices, x.indptr.copy()), shape=x.shape)
    np.testing.assert_allclose(score_gene_sets(xu, sets, method, **kw), ref, atol=1e-12)


@pytest.mark.parametrize("method", ["scanpy", "aucell", "mean"])
def test_backed_h5ad_equals_in_memory(tmp_path, method: str) -> None:
    x = make_matrix(seed=8)
    a = make_adata(x)
    path = tmp_path / "x.h5ad"
    a.write_h5ad(path)
    sets = make_sets(8)
    ref = score_gene_sets(a, sets, method)
    backed = ad.read_h5ad(path, backed="r")
    try:
        got = score_gene_sets(backed, sets, method, chunk_size=50)
        pd.testing.assert_frame_equal(got, ref)
        with h5py.File(path, "r") as f:
            ds = ad.io.sparse_dataset(f["X"])
            got2 = score_gene_sets(ds, sets, method, var_names=a.var_names, chunk_size=33)
        np.testing.assert_array_equal(got2.to_numpy(), ref.to_numpy())
    finally:
        backed.file.close()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    n_cells=st.integers(1, 60),
    n_genes=st.integers(30, 80),
    density=st.floats(0.0, 0.6),
    seed=st.integers(0, 2**16),
    chunk=st.integers(1, 70),
    method=st.sampled_from(["scanpy", "aucell", "mean", "zscore"]),
)
def test_chunked_equals_in_memory(n_cells, n_genes, density, seed, chunk, method) -> None:
    rng = np.random.default_rng(seed)
    x = sp.random(n_cells, n_genes, density=density, format="csr", random_state=rng)
    x.data = np.log1p(x.data * 10).astype(np.float32)
    x = x.tolil()
    x[0, [0, 1, 3, n_genes - 1]] = 1.0  # every set has a detected gene (aucell)
    x = x.tocsr().astype(np.float32)
    x.sort_indices()
    names = gene_names(n_genes)
    sets = {"a": names[:5], "b": names[3:20:2], "c": [names[-1]]}
    kw = {"var_names": names, "n_up": 2 if method == "aucell" else None}
    if method == "scanpy":
        kw = {"var_names": names, "n_bins": 5, "ctrl_size": 4}
    full = score_gene_sets(x, sets, method, **kw)
    chunked = score_gene_sets(x, sets, method, chunk_size=chunk, **kw)
    np.testing.assert_array_equal(chunked.to_numpy(), full.to_numpy())


# ---------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------


def test_errors_name_the_problem() -> None:
    x = make_matrix(seed=1)
    names = gene_names()
    sets = make_sets(1)
    counts = x.copy()
    counts.data = np.ceil(counts.data * 30)
    with pytest.raises(ValueError, match="raw counts"):
        score_gene_sets(counts, sets, var_names=names)
    with pytest.raises(ValueError, match="'ghost'"):
        score_gene_sets(x, {"ghost": ["X1", "X2"]}, var_names=names)
    bad = x.copy()
    bad.data[10] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        score_gene_sets(bad, sets, "mean", var_names=names)
    with pytest.raises(ValueError, match="duplicate gene names"):
        score_gene_sets(x, sets, var_names=["G0"] * N_GENES)
    with pytest.raises(TypeError, match="tocsr"):
        score_gene_sets(x.tocsc(), sets, var_names=names)
    with pytest.raises(ValueError, match="var_names"):
        score_gene_sets(x, sets)
    with pytest.raises(ValueError, match="weights"):
        score_gene_sets(x, {"w": {"G1": 1.0, "G2": -2.0}}, var_names=names)
    with pytest.raises(ValueError, match="layer='lognorm'"):
        score_gene_sets(make_adata(x), sets, layer="lognorm")
    with pytest.raises(ValueError, match="method"):
        score_gene_sets(x, sets, "ssgsea", var_names=names)  # type: ignore[arg-type]


def test_raw_counts_allowed_for_aucell_and_n_up_rules() -> None:
    x = make_matrix(seed=2)
    x.data = np.ceil(x.data * 30)
    out = score_gene_sets(x, make_sets(2), "aucell", var_names=gene_names())
    assert np.nanmax(out.to_numpy()) <= 1.0 and np.nanmin(out.to_numpy()) >= 0.0
    assert decoupler_n_up(399, None) == 20
    assert decoupler_n_up(10, None) == 2
    with pytest.raises(ValueError, match="n_up"):
        decoupler_n_up(10, 11)


def test_n_threads_does_not_change_results() -> None:
    x = make_matrix(seed=11)
    sets = make_sets(11)
    a = score_gene_sets(x, sets, var_names=gene_names(), n_threads=1)
    b = score_gene_sets(x, sets, var_names=gene_names(), n_threads=2)
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())


@pytest.mark.parametrize("dense", [False, True])
def test_precomputed_gene_means_give_identical_scores(dense: bool) -> None:
    from mscflow.scoring.core import gene_means

    x = make_matrix(seed=4)
    x = x.toarray() if dense else x
    sets, kw = make_sets(4), {"var_names": gene_names()}
    means = gene_means(x, **kw)
    ref = score_gene_sets(x, sets, "scanpy", **kw)
    got = score_gene_sets(x, sets, "scanpy", gene_means=means, **kw)
    np.testing.assert_array_equal(got.to_numpy(), ref.to_numpy())
    with pytest.raises(ValueError, match="one mean per gene"):
        score_gene_sets(x, sets, "scanpy", gene_means=means[:-1], **kw)
    with pytest.raises(ValueError, match="only applies to method='scanpy'"):
        score_gene_sets(x, sets, "mean", gene_means=means, **kw)


@pytest.mark.parametrize("method", ["scanpy", "aucell", "mean", "zscore"])
def test_rows_scored_with_the_whole_matrix_stats_equal_the_whole_scores(method: str,
                                                                         tmp_path) -> None:
    """Per-sample jobs: parts of the rows, scored with the statistics of all rows (saved and
    loaded as the workflow passes them), give the one-call scores to the bit."""
    from mscflow.scoring.core import GeneStats, gene_stats_for

    x = make_matrix(seed=8)
    sets, kw = make_sets(8), {"var_names": gene_names()}
    whole = score_gene_sets(x, sets, method, **kw)
    gene_stats_for(x, method, **kw).save(tmp_path / "stats.npz")
    stats = GeneStats.load(tmp_path / "stats.npz")
    parts = [score_gene_sets(x[a:b], sets, method, gene_stats=stats, **kw)
             for a, b in [(0, 120), (120, 121), (121, N_CELLS)]]
    np.testing.assert_array_equal(np.vstack([p.to_numpy() for p in parts]), whole.to_numpy())


def test_gene_stats_must_fit_the_method_and_genes() -> None:
    from mscflow.scoring.core import gene_stats_for

    x = make_matrix(seed=9)
    sets, kw = make_sets(9), {"var_names": gene_names()}
    sums_only = gene_stats_for(x, "scanpy", **kw)
    for method, lacking in (("zscore", "sums64"), ("aucell", "nnz")):
        with pytest.raises(ValueError, match=f"gene_stats lack.*{lacking}"):
            score_gene_sets(x, sets, method, gene_stats=sums_only, **kw)
    with pytest.raises(ValueError, match="gene_stats lack"):
        score_gene_sets(x[:, :-1], sets, "mean", gene_stats=sums_only,
                        var_names=gene_names()[:-1])
    with pytest.raises(ValueError, match="not both"):
        score_gene_sets(x, sets, "scanpy", gene_stats=sums_only,
                        gene_means=sums_only.sums / N_CELLS, **kw)


def test_combine_sample_scores_orders_and_checks_cells() -> None:
    from mscflow.scoring.core import combine_sample_scores

    a = pd.DataFrame({"s": [1.0, 2.0]}, index=["c1", "c3"])
    b = pd.DataFrame({"s": [3.0]}, index=["c2"])
    cells = pd.Index(["c1", "c2", "c3"])
    assert combine_sample_scores([a, b], cells)["s"].tolist() == [1.0, 3.0, 2.0]
    with pytest.raises(ValueError, match="1 cells of the merged object have no score"):
        combine_sample_scores([a], cells)
    with pytest.raises(ValueError, match="more than one sample"):
        combine_sample_scores([a, b, b], cells)
