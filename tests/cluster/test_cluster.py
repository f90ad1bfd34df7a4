"""Clustering helpers: merging without extra copies, fast settings keep the planted groups."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.metrics import adjusted_rand_score

from mscflow.cluster.core import (
    ClusterSettings,
    embed_and_cluster,
    leiden_key,
    merge_sample_files,
    merge_samples,
    normalise,
)
from mscflow.io import write_h5ad_atomic


def planted_sample(name: str, n_cells: int, seed: int) -> tuple[ad.AnnData, np.ndarray]:
    """Counts of three planted cell groups (each with 30 up-regulated genes) of one sample."""
    rng = np.random.default_rng(seed)
    n_genes = 600
    groups = rng.integers(0, 3, n_cells)
    base = np.random.default_rng(123).gamma(0.6, 1.0, n_genes)  # shared by all samples
    means = np.tile(base, (3, 1))
    for g in range(3):
        means[g, g * 30:(g + 1) * 30] *= 12
    lib = rng.lognormal(np.log(1500), 0.3, n_cells)
    rate = means[groups] / means[groups].sum(axis=1, keepdims=True) * lib[:, None]
    x = sparse.csr_matrix(rng.poisson(rate).astype(np.float32))
    adata = ad.AnnData(x, obs=pd.DataFrame({"sample": name},
                                           index=[f"{name}:{i}" for i in range(n_cells)]),
                       var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]))
    return adata, groups


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], np.ndarray]:
    out = tmp_path_factory.mktemp("cluster")
    paths, truth = [], []
    for i in range(3):
        adata, groups = planted_sample(f"s{i}", 700, seed=i)
        write_h5ad_atomic(adata, out / f"s{i}.h5ad", compression="lzf")
        paths.append(out / f"s{i}.h5ad")
        truth.append(groups)
    return paths, np.concatenate(truth)


def test_merge_sample_files_equals_merge_samples(sample_files) -> None:
    paths, _ = sample_files
    merged = merge_sample_files(paths)
    reference = merge_samples([ad.read_h5ad(p) for p in paths])
    assert sparse.issparse(merged.X) and "counts" not in merged.layers  # QC files keep them
    assert (merged.X != reference.X).nnz == 0
    with_counts = merge_sample_files(paths, keep_counts=True)  # for scVI
    assert (with_counts.layers["counts"] != reference.layers["counts"]).nnz == 0
    assert list(merged.obs_names) == list(reference.obs_names)
    assert merged.obs["sample"].dtype == "category"


@pytest.mark.parametrize("n_samples", [1, 2])
def test_merge_takes_paths_as_strings_as_snakemake_gives_them(sample_files, n_samples) -> None:
    """One sample (a real single-channel run) or several, named by str paths."""
    paths = [str(p) for p in sample_files[0][:n_samples]]
    merged = merge_sample_files(paths)
    reference = merge_samples([ad.read_h5ad(p) for p in paths])
    assert (merged.X != reference.X).nnz == 0
    assert list(merged.obs_names) == list(reference.obs_names)
    assert list(merged.obs.columns) == list(reference.obs.columns)
    assert merged.obs["sample"].dtype == "category"


def test_merge_skips_empty_samples_and_names_none_left(sample_files, tmp_path: Path) -> None:
    paths, _ = sample_files
    empty = ad.read_h5ad(paths[0])[:0].copy()
    write_h5ad_atomic(empty, tmp_path / "empty.h5ad", compression="lzf")
    merged = merge_sample_files([paths[0], tmp_path / "empty.h5ad", paths[1]])
    assert (merged.X != merge_samples([ad.read_h5ad(p) for p in paths[:2]]).X).nnz == 0
    with pytest.raises(ValueError, match="no sample has cells left after QC"):
        merge_sample_files([tmp_path / "empty.h5ad"])


def test_normalise_in_blocks_is_scanpys_normalisation_to_the_bit(sample_files) -> None:
    """normalise() works on blocks of cells in place (no second copy of the matrix) and
    gives exactly scanpy's normalize_total + log1p of the whole matrix."""
    import scanpy as sc

    merged = merge_sample_files(sample_files[0])
    reference = merged.copy()
    sc.pp.normalize_total(reference, target_sum=1e4)
    sc.pp.log1p(reference)
    normalise(merged, 1e4, block_cells=97)  # blocks that do not divide the cells
    assert np.array_equal(merged.X.data, reference.X.data)
    assert np.array_equal(merged.X.indices, reference.X.indices)
    assert merged.uns["log1p"] == reference.uns["log1p"]


def test_in_place_scaling_is_the_sparse_product_to_the_bit() -> None:
    """The PCA's gene scaling, done in place, stores the same values in the same order as
    the product x @ diag(factors) did (so the PCA stays the same to the bit)."""
    from mscflow.cluster.core import _scale_columns_reversing_rows

    x = sparse.random(300, 80, density=0.1, format="csr", dtype=np.float32, random_state=1)
    factors = np.random.default_rng(2).random(80).astype(np.float32) + 0.5
    product = sparse.csr_matrix(x @ sparse.diags(factors))
    _scale_columns_reversing_rows(x, factors)
    assert np.array_equal(x.indptr, product.indptr)
    assert np.array_equal(x.indices, product.indices)
    assert np.array_equal(x.data, product.data)
    assert not x.has_sorted_indices


@pytest.mark.parametrize("method", ["t-test", "t-test_overestim_var"])
def test_markers_by_gene_blocks_are_scanpys_rank_genes_groups_to_the_bit(
        sample_files, method: str) -> None:
    """The markers' t-tests on blocks of genes (no copy of the rest of the cells per
    cluster): the same uns entry and table as sc.tl.rank_genes_groups."""
    import scanpy as sc

    from mscflow.cluster.core import marker_genes

    adata = merge_sample_files(sample_files[0])
    normalise(adata, 1e4)
    adata.obs["group"] = pd.Categorical(np.repeat(["a", "b", "c", "d"], adata.n_obs // 4 + 1)
                                        [:adata.n_obs])
    reference = adata.copy()
    sc.tl.rank_genes_groups(reference, "group", method=method, n_genes=25,
                            key_added="markers_group")
    table = marker_genes(adata, "group", method, block_genes=77)
    got, want = adata.uns["markers_group"], reference.uns["markers_group"]
    assert list(got) == list(want) and got["params"] == want["params"]
    for column in ("names", "scores", "pvals", "pvals_adj", "logfoldchanges"):
        assert got[column].dtype == want[column].dtype, column
        for group in ("a", "b", "c", "d"):
            assert np.array_equal(got[column][group], want[column][group]), (column, group)
    expected = sc.get.rank_genes_groups_df(reference, group=None, key="markers_group")
    pd.testing.assert_frame_equal(table.drop(columns="clustering"),
                                  expected.rename(columns={"names": "gene"}), check_exact=True)


def test_column_means_are_scipys_to_the_bit() -> None:
    from mscflow.cluster.core import _column_means_float32

    x = sparse.random(5000, 60, density=0.2, format="csr", dtype=np.float32, random_state=3)
    x.data = np.log1p(x.data * 50).astype(np.float32)
    mean, sq = _column_means_float32(x)
    assert np.array_equal(mean, np.asarray(x.mean(axis=0), dtype=np.float64).ravel())
    assert np.array_equal(sq, np.asarray(x.multiply(x).mean(axis=0), dtype=np.float64).ravel())


def test_lzf_h5ad_round_trip_stays_sparse(sample_files, tmp_path: Path) -> None:
    merged = merge_sample_files(sample_files[0], keep_counts=True)
    write_h5ad_atomic(merged, tmp_path / "m.h5ad", compression="lzf")
    back = ad.read_h5ad(tmp_path / "m.h5ad")
    assert sparse.issparse(back.X) and sparse.issparse(back.layers["counts"])
    assert (back.X != merged.X).nnz == 0


@pytest.mark.parametrize("fast", [True, False])
def test_fast_and_reference_settings_find_the_planted_groups(sample_files, fast: bool) -> None:
    paths, truth = sample_files
    adata = merge_sample_files(paths)
    normalise(adata, 1e4)
    overrides = {} if fast else {"pca_solver": "arpack", "leiden_flavor": "leidenalg",
                                 "neighbors_method": "sklearn", "umap_epochs": None,
                                 "scale": False, "integration": {"method": "none"}}
    settings = ClusterSettings.from_config({"n_top_genes": 300, "resolutions": [0.2],
                                            "default_resolution": 0.2, **overrides},
                                           n_jobs=2, random_state=0, batch_key="sample")
    embed_and_cluster(adata, settings)
    assert adjusted_rand_score(truth, adata.obs[leiden_key(0.2)]) > 0.95
    assert adata.obsm["X_umap"].shape == (adata.n_obs, 2)


@pytest.fixture()
def graph(sample_files) -> tuple[ad.AnnData, ClusterSettings]:
    """Merged, normalised planted samples with PCA and neighbour graph."""
    from mscflow.cluster.core import embed_graph

    adata = merge_sample_files(sample_files[0])
    normalise(adata, 1e4)
    settings = ClusterSettings.from_config({"n_top_genes": 300, "umap_epochs": 50}, n_jobs=2,
                                           random_state=3, batch_key="sample")
    embed_graph(adata, settings)
    return adata, settings


@pytest.mark.slow
@pytest.mark.parametrize("approximate_above", [200_000, 0])
def test_umap_in_its_own_process_equals_umap_in_process(graph, approximate_above: int) -> None:
    """The workflow runs UMAP beside Leiden in a child process: same seed, same embedding,
    with either solver of the spectral start."""
    import dataclasses

    import scanpy as sc
    from threadpoolctl import threadpool_limits

    from mscflow.cluster.core import run_umap, umap_alongside

    adata, settings = graph
    settings = dataclasses.replace(settings, approximate_neighbors_above=approximate_above)
    solver = "eigsh" if approximate_above else "lobpcg"
    with umap_alongside() as umap:
        umap.submit(adata, settings)
        umap.collect(adata)
    assert not umap.dir.exists()
    inline = adata.copy()
    with threadpool_limits(1):
        run_umap(inline, min_dist=settings.umap_min_dist, random_state=3, maxiter=50,
                 solver=solver)
    np.testing.assert_array_equal(adata.obsm["X_umap"], inline.obsm["X_umap"])
    assert adata.uns["umap"] == inline.uns["umap"]
    if solver == "eigsh":  # umap-learn's own choice at this size: plain sc.tl.umap
        plain = adata.copy()
        with threadpool_limits(1):
            sc.tl.umap(plain, min_dist=settings.umap_min_dist, random_state=3, maxiter=50)
        np.testing.assert_array_equal(adata.obsm["X_umap"], plain.obsm["X_umap"])


def test_spectral_start_by_lobpcg_finds_arpacks_eigenvectors(graph) -> None:
    """Above approximate_neighbors_above cells UMAP starts from LOBPCG's eigenvectors of
    the graph Laplacian: the same as ARPACK's (up to sign), without its n^1.5 memory."""
    from scipy.sparse.csgraph import connected_components
    from umap import spectral

    from mscflow.cluster.core import spectral_solver, umap_spectral_solver

    adata, settings = graph
    assert spectral_solver(settings, 200_000) == "eigsh"
    assert spectral_solver(settings, 200_001) == "lobpcg"
    connectivities = adata.obsp["connectivities"].tocsr()
    labels = connected_components(connectivities)[1]
    biggest = labels == np.bincount(labels).argmax()
    component = connectivities[biggest][:, biggest]
    original = spectral._spectral_layout
    arpack = spectral.spectral_layout(None, component, 2, np.random.RandomState(0))
    with umap_spectral_solver("lobpcg"):
        assert spectral._spectral_layout is not original
        lobpcg = spectral.spectral_layout(None, component, 2, np.random.RandomState(0))
    assert spectral._spectral_layout is original
    for axis in range(2):
        assert abs(np.corrcoef(arpack[:, axis], lobpcg[:, axis])[0, 1]) > 0.99


@pytest.mark.slow
def test_umap_process_failure_is_reported(graph) -> None:
    from mscflow.cluster.core import umap_alongside

    adata, settings = graph
    with pytest.raises(RuntimeError, match="UMAP process failed"):
        with umap_alongside() as umap:
            umap.submit(adata, settings)
            (umap.dir / "input.npz").unlink()  # the child cannot read its input
            umap.collect(adata)
    assert umap.process.poll() is not None and not umap.dir.exists()


@pytest.mark.parametrize("max_value", [10, None])
def test_sparse_scaled_pca_equals_scanpy_scale_then_pca(max_value) -> None:
    """cluster.scale: z-scored, clipped genes without densifying give scanpy's PCA."""
    import scanpy as sc

    from mscflow.cluster.core import pca

    rng = np.random.default_rng(0)
    rate = rng.gamma(0.3, 1, (1, 300)) * rng.lognormal(0, 0.5, (600, 1))
    counts = rng.poisson(rate).astype(np.float32)
    counts[:4, :10] = 200  # outliers the clipping caps
    adata = ad.AnnData(sparse.csr_matrix(counts))
    normalise(adata, 1e4)
    adata.var["highly_variable"] = rng.random(300) < 0.7
    settings = ClusterSettings.from_config({"scale_max_value": max_value}, n_jobs=1,
                                           random_state=0, batch_key="sample")
    pca(adata, settings, 15)
    assert sparse.issparse(adata.X)
    reference = adata[:, adata.var["highly_variable"]].copy()
    sc.pp.scale(reference, max_value=max_value)
    if max_value is not None:
        assert reference.X.max() == max_value  # the clipping was exercised
    sc.pp.pca(reference, n_comps=15, svd_solver="arpack", random_state=0)
    np.testing.assert_allclose(np.abs(adata.obsm["X_pca"]), np.abs(reference.obsm["X_pca"]),
                               atol=5e-3)
    np.testing.assert_allclose(adata.uns["pca"]["variance"], reference.uns["pca"]["variance"],
                               rtol=1e-4)
    assert adata.varm["PCs"].shape == (300, 15)
    assert not adata.varm["PCs"][~adata.var["highly_variable"].to_numpy()].any()


def test_auto_search_is_exact_below_the_threshold_and_approximate_above() -> None:
    """neighbors_method auto: brute force up to approximate_neighbors_above cells (the same
    graph as "brute"), pynndescent above it, finding >= 95 % of the exact neighbours, seeded
    (a rerun gives the same graph)."""
    from mscflow.cluster.core import neighbour_search, neighbours

    rng = np.random.default_rng(7)
    centres = rng.normal(scale=4.0, size=(12, 20))
    points = centres[rng.integers(0, 12, 4000)] + rng.normal(size=(4000, 20))
    adata = ad.AnnData(obs=pd.DataFrame(index=[f"c{i}" for i in range(4000)]),
                       obsm={"X_pca": points.astype(np.float32)})

    def graph(**cfg) -> tuple[str, sparse.csr_matrix]:
        settings = ClusterSettings.from_config(cfg, n_jobs=2, random_state=0, batch_key="")
        used = neighbours(adata, settings, n_pcs=20)
        assert adata.uns["neighbors"]["params"]["search"] == used
        return used, adata.obsp["distances"].tocsr().copy()

    assert neighbour_search(ClusterSettings.from_config(
        {}, n_jobs=1, random_state=0, batch_key=""), 200_000) == "brute"
    assert neighbour_search(ClusterSettings.from_config(
        {}, n_jobs=1, random_state=0, batch_key=""), 200_001) == "pynndescent"
    below, exact = graph(neighbors_method="auto", approximate_neighbors_above=4000)
    brute, reference = graph(neighbors_method="brute")
    assert below == brute == "brute" and (exact != reference).nnz == 0
    above, approx = graph(neighbors_method="auto", approximate_neighbors_above=3999)
    assert above == "pynndescent"
    from sklearn.neighbors import NearestNeighbors

    k = int(np.diff(approx.indptr).max())  # scanpy keeps n_neighbors - 1 besides the cell
    truth = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(return_distance=False)
    found = [len(set(approx[i].indices) & set(truth[i, :k])) for i in range(4000)]
    assert k == 14 and sum(found) / truth[:, :k].size >= 0.95
    _, again = graph(neighbors_method="auto", approximate_neighbors_above=3999)
    assert (again != approx).nnz == 0


def test_blocked_randomized_pca_matches_exact_pca(sample_files, monkeypatch) -> None:
    """The randomised PCA on blocks of cells (pca_solver randomized_blocks) finds the
    components of an exact SVD of the scaled, capped, centred HVG matrix."""
    import mscflow.cluster.blocked_pca as blocked
    from mscflow.cluster.hvg import highly_variable_genes

    monkeypatch.setattr(blocked, "BLOCK_CELLS", 333)  # many blocks, the last one short
    adata = merge_sample_files(sample_files[0])
    normalise(adata, 1e4)
    highly_variable_genes(adata, 300, batch_key="sample")
    genes = np.flatnonzero(adata.var["highly_variable"])
    scores, loadings, variance, ratio = blocked.randomized_pca(
        adata.X, genes, 20, zscore=True, max_value=10, random_state=0)
    dense = adata.X[:, genes].toarray().astype(np.float64)
    mean, sd = dense.mean(axis=0), dense.std(axis=0, ddof=1)
    sd[sd == 0] = 1
    scaled = np.minimum(dense, mean + 10 * sd) / sd
    scaled -= scaled.mean(axis=0)
    u, s, vt = np.linalg.svd(scaled, full_matrices=False)
    exact_variance = s[:20] ** 2 / (adata.n_obs - 1)
    total = (s**2 / (adata.n_obs - 1)).sum()
    # the planted structure's three components exactly; the flat noise tail from below
    # (a projection never adds variance), within 10 %
    np.testing.assert_allclose(variance[:3], exact_variance[:3], rtol=1e-4)
    np.testing.assert_allclose(ratio[:3], exact_variance[:3] / total, rtol=1e-4)
    assert (variance <= exact_variance * (1 + 1e-9)).all()
    assert (variance >= 0.9 * exact_variance).all()
    for k in range(3):  # same components up to sign
        assert abs(np.corrcoef(scores[:, k], u[:, k] * s[k])[0, 1]) > 0.9999
        assert abs(loadings[np.abs(loadings[:, k]).argmax(), k]) == np.abs(loadings[:, k]).max()
        assert loadings[np.abs(loadings[:, k]).argmax(), k] > 0


def test_blocked_pca_in_the_clustering_finds_the_planted_groups(sample_files) -> None:
    paths, truth = sample_files
    adata = merge_sample_files(paths)
    normalise(adata, 1e4)
    settings = ClusterSettings.from_config(
        {"n_top_genes": 300, "resolutions": [0.2], "default_resolution": 0.2,
         "pca_solver": "randomized_blocks"}, n_jobs=2, random_state=0, batch_key="sample")
    embed_and_cluster(adata, settings)
    assert adjusted_rand_score(truth, adata.obs[leiden_key(0.2)]) > 0.95
    assert adata.uns["pca"]["params"]["svd_solver"] == "randomized_blocks"
    assert adata.varm["PCs"].shape == (adata.n_vars, adata.obsm["X_pca"].shape[1])
    assert (adata.varm["PCs"][~adata.var["highly_variable"].to_numpy()] == 0).all()
