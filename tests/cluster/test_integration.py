"""Batch integration: the batch column, Harmony/BBKNN/scVI in the clustering, and the
mixing and conservation metrics (LISI checked against harmonypy's implementation)."""

from __future__ import annotations

import logging

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
    merge_samples,
    normalise,
)
from mscflow.cluster.integration import batch_key, integrate, resolve_batch_key
from mscflow.cluster.integration_metrics import (
    batch_asw,
    before_after_figure,
    celltype_asw,
    clisi_scaled,
    graph_knn,
    ilisi_scaled,
    integration_evidence,
    knn_excluding_self,
    lisi,
    single_type_batches,
)
from mscflow.errors import ConfigError, InputDataError, SampleSheetError

N_GROUPS = 4


def batch_sample(name: str, batch: int, n_cells: int, seed: int, *, gene_log_sd: float = 0.6,
                 n_genes: int = 600) -> ad.AnnData:
    """Counts of four planted cell types (30 marker genes each, 10-fold); the batch
    multiplies a third of the genes by log-normal factors (same factors for all samples of
    the batch), so without integration the batches separate."""
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, N_GROUPS, n_cells)
    means = np.tile(np.random.default_rng(123).gamma(0.6, 1.0, n_genes), (N_GROUPS, 1))
    for g in range(N_GROUPS):
        means[g, g * 30:(g + 1) * 30] *= 10
    batch_rng = np.random.default_rng(1000 + batch)
    shifted = batch_rng.random(n_genes) < 1 / 3
    means[:, shifted] *= np.exp(batch_rng.normal(0, gene_log_sd, shifted.sum()))
    library = rng.lognormal(np.log(2500), 0.3, n_cells)
    rate = means[groups] / means[groups].sum(axis=1, keepdims=True) * library[:, None]
    obs = pd.DataFrame({"sample": name, "batch": f"b{batch}", "tissue": "lung",
                        "condition": ["control", "MSC"][seed // 2 % 2],
                        "truth": [f"type{g}" for g in groups]},
                       index=[f"{name}:{i}" for i in range(n_cells)])
    return ad.AnnData(sparse.csr_matrix(rng.poisson(rate).astype(np.float32)), obs=obs,
                      var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]))


def batch_data(n_samples: int = 4, n_cells: int = 300, **kwargs) -> ad.AnnData:
    """Merged, normalised samples alternating between two batches."""
    adata = merge_samples([batch_sample(f"s{i}", i % 2, n_cells, seed=i, **kwargs)
                           for i in range(n_samples)])
    normalise(adata, 1e4)
    return adata


def settings_for(method: str, **cluster) -> ClusterSettings:
    return ClusterSettings.from_config(
        {"n_top_genes": 300, "resolutions": [0.3], "default_resolution": 0.3,
         "umap_epochs": 30, **cluster, "integration": {"method": method}},
        n_jobs=2, random_state=0, batch_key="batch")


@pytest.fixture(scope="module")
def clustered() -> dict[str, ad.AnnData]:
    """The synthetic batches clustered without integration, with Harmony and with BBKNN
    (tens of seconds: the tests using it are in the slow lane)."""
    base = batch_data()
    out = {}
    for method in ("none", "harmony", "bbknn"):
        adata = base.copy()
        embed_and_cluster(adata, settings_for(method))
        out[method] = adata
    return out


def scaled_ilisi(adata: ad.AnnData, rep: str) -> float:
    dist, idx = knn_excluding_self(adata.obsm[rep], 90)
    return ilisi_scaled(lisi(dist, idx, adata.obs["batch"].to_numpy(), 30), 2)


# --- the batch column ----------------------------------------------------------------------


def test_batch_key_defaults_to_the_batch_column_else_sample() -> None:
    assert batch_key(["sample", "tissue", "batch", "path"], None) == "batch"
    assert batch_key(["sample", "tissue", "path"], None) == "sample"
    assert batch_key(["sample", "run", "batch"], "run") == "run"
    with pytest.raises(ConfigError) as err:
        batch_key(["sample", "tissue", "batch", "path"], "lane")
    text = str(err.value)
    assert "'cluster.integration.batch_key' is 'lane'" in text
    assert "['sample', 'tissue', 'batch']" in text  # the sheet's usable columns
    with pytest.raises(ConfigError, match="not a column"):
        batch_key(["sample", "path"], "path")  # a file column is no batch


def test_resolve_batch_key_names_samples_without_a_batch() -> None:
    sheet = pd.DataFrame({"sample": ["a", "b", "c"], "batch": ["r1", "", "r2"]},
                         index=["a", "b", "c"])
    sheet.attrs["path"] = "config/samples.tsv"
    with pytest.raises(SampleSheetError, match=r"empty for sample\(s\) \['b'\]"):
        resolve_batch_key(sheet, None)
    assert resolve_batch_key(sheet, "sample") == "sample"


# --- the methods in the clustering -----------------------------------------------------------


@pytest.mark.slow
def test_without_integration_batches_split_cell_types_and_harmony_mixes_them(clustered) -> None:
    none, harmony = clustered["none"], clustered["harmony"]
    key = leiden_key(0.3)
    before, after = scaled_ilisi(none, "X_pca"), scaled_ilisi(harmony, "X_pca_harmony")
    assert before < 0.2 < 0.8 <= after, (before, after)
    truth = none.obs["truth"]
    # without integration cell types are split into clusters of one batch each
    counts = pd.crosstab(none.obs[key], none.obs["batch"])
    pure = counts.max(axis=1) / counts.sum(axis=1) > 0.95
    split = none.obs.groupby("truth", observed=True)[key].agg(
        lambda c: pure.loc[c.to_numpy()].mean() > 0.9 and c.nunique() > 1)
    assert split.all(), counts
    assert adjusted_rand_score(truth, none.obs[key]) < 0.8
    assert adjusted_rand_score(truth, harmony.obs[key]) > 0.95
    types = truth.to_numpy()
    assert celltype_asw(harmony.obsm["X_pca_harmony"], types) >= celltype_asw(
        none.obsm["X_pca"], types) - 0.05
    assert harmony.uns["integration"]["use_rep"] == "X_pca_harmony"
    assert harmony.uns["neighbors"]["params"]["use_rep"] == "X_pca_harmony"
    np.testing.assert_array_equal(harmony.obsm["X_pca"], none.obsm["X_pca"])  # PCA kept
    assert (harmony.X != none.X).nnz == 0  # expression untouched


@pytest.mark.slow
def test_bbknn_builds_a_batch_balanced_graph(clustered) -> None:
    bbknn = clustered["bbknn"]
    assert bbknn.uns["integration"]["graph_built"]
    assert bbknn.uns["neighbors"]["params"]["bbknn"]["batch_key"] == "batch"
    graph = bbknn.obsp["distances"].tocsr()
    batches = bbknn.obs["batch"].to_numpy()
    row = graph[0].indices
    assert set(batches[row]) == {"b0", "b1"}  # every cell has neighbours in both batches
    assert adjusted_rand_score(bbknn.obs["truth"], bbknn.obs[leiden_key(0.3)]) > 0.95
    dist, idx = graph_knn(bbknn.obsp["distances"], 90)
    assert ilisi_scaled(lisi(dist, idx, batches, 30), 2) > 0.8


@pytest.mark.slow
def test_harmony_rerun_is_identical(clustered) -> None:
    adata = batch_data()
    embed_and_cluster(adata, settings_for("harmony"))
    np.testing.assert_array_equal(adata.obsm["X_pca_harmony"],
                                  clustered["harmony"].obsm["X_pca_harmony"])
    np.testing.assert_array_equal(adata.obsm["X_umap"], clustered["harmony"].obsm["X_umap"])


def test_harmony_corrects_the_pca_in_place() -> None:
    """Harmony on the PCA of the synthetic batches: mixed, deterministic, PCA kept."""
    import scanpy as sc

    from mscflow.cluster.core import pca as cluster_pca

    adata = batch_data(n_cells=200)
    sc.pp.highly_variable_genes(adata, n_top_genes=300, flavor="seurat", batch_key="sample")
    cluster_pca(adata, settings_for("harmony"), 15)
    pca = adata.obsm["X_pca"].copy()
    done = integrate(adata, settings_for("harmony").integration, batch_key="batch",
                     n_neighbors=15, n_jobs=1, random_state=0)
    assert done.use_rep == "X_pca_harmony" and not done.graph_built
    assert adata.uns["integration"]["n_batches"] == 2
    np.testing.assert_array_equal(adata.obsm["X_pca"], pca)
    assert scaled_ilisi(adata, "X_pca") < 0.2 and scaled_ilisi(adata, "X_pca_harmony") > 0.8
    again = adata.copy()
    integrate(again, settings_for("harmony").integration, batch_key="batch",
              n_neighbors=15, n_jobs=2, random_state=0)
    np.testing.assert_array_equal(again.obsm["X_pca_harmony"], adata.obsm["X_pca_harmony"])


def test_one_batch_is_skipped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    adata = batch_data(n_samples=1, n_cells=300)
    settings = settings_for("harmony")
    import scanpy as sc

    sc.pp.pca(adata, n_comps=10)
    with caplog.at_level(logging.INFO, logger="mscflow.cluster.integration"):
        done = integrate(adata, settings.integration, batch_key="batch", n_neighbors=15,
                         n_jobs=1, random_state=0)
    assert done.method == "none" and done.requested == "harmony"
    assert "X_pca_harmony" not in adata.obsm
    assert "integration skipped: one batch ('b0' of 'batch')" in caplog.text


def test_small_batches_stop_bbknn_and_warn_harmony(caplog: pytest.LogCaptureFixture) -> None:
    import scanpy as sc

    adata = merge_samples([batch_sample("big", 0, 300, 1), batch_sample("tiny", 1, 3, 2)])
    normalise(adata, 1e4)
    sc.pp.pca(adata, n_comps=10)
    with pytest.raises(InputDataError, match=r"batch\(es\) 'b1' \(3 cells\)"):
        integrate(adata, settings_for("bbknn").integration, batch_key="batch",
                  n_neighbors=15, n_jobs=1, random_state=0)
    with caplog.at_level(logging.WARNING, logger="mscflow.cluster.integration"):
        integrate(adata, settings_for("harmony").integration, batch_key="batch",
                  n_neighbors=15, n_jobs=1, random_state=0)
    assert "'b1' (3 cells) have fewer cells than cluster.n_neighbors = 15" in caplog.text


def test_missing_batch_column_names_the_obs_columns() -> None:
    adata = batch_data(n_samples=2, n_cells=100)
    with pytest.raises(InputDataError, match="no 'lane' column"):
        integrate(adata, settings_for("harmony").integration, batch_key="lane",
                  n_neighbors=15, n_jobs=1, random_state=0)


def test_scvi_without_the_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from mscflow.cluster import integration

    real = importlib.util.find_spec
    monkeypatch.setattr(integration.importlib.util, "find_spec",
                        lambda name, *a: None if name == "scvi" else real(name, *a))
    with pytest.raises(ConfigError) as err:
        integration.check_method_available("scvi")
    assert 'pip install -e ".[scvi]"' in str(err.value)
    assert "torch==2.13.0" in str(err.value)
    integration.check_method_available("harmony")


@pytest.mark.slow
def test_scvi_latent_mixes_batches_and_is_reproducible() -> None:
    pytest.importorskip("scvi", reason='scvi-tools not installed (pip install -e ".[scvi]")')
    import scanpy as sc

    from mscflow.cluster.integration import ScviSettings, run_scvi

    adata = batch_data(n_samples=2, n_cells=300)
    sc.pp.highly_variable_genes(adata, n_top_genes=300)
    batches = adata.obs["batch"].astype("category")
    short = ScviSettings.from_config({"max_epochs": 15, "n_latent": 8})
    first = run_scvi(adata, batches, short, n_jobs=1, random_state=0)
    second = run_scvi(adata, batches, short, n_jobs=1, random_state=0)
    assert first.shape == (adata.n_obs, 8)
    np.testing.assert_array_equal(first, second)
    # 600 cells in batches of 128 are 5 steps an epoch: mixing needs a few hundred epochs
    # (measured scaled iLISI: 0.00 after 15 and 100 epochs, 0.84 after 300)
    trained = ScviSettings.from_config({"max_epochs": 300, "n_latent": 8})
    latent = run_scvi(adata, batches, trained, n_jobs=1, random_state=0)
    dist, idx = knn_excluding_self(latent, 90)
    mixed = ilisi_scaled(lisi(dist, idx, batches.to_numpy(), 30), 2)
    sc.pp.pca(adata, n_comps=8)
    dist, idx = knn_excluding_self(adata.obsm["X_pca"], 90)
    assert mixed > ilisi_scaled(lisi(dist, idx, batches.to_numpy(), 30), 2) + 0.2


# --- the metrics -----------------------------------------------------------------------------


def test_lisi_matches_harmonypy_compute_lisi() -> None:
    """The reference implementation (harmonypy's C++ compute_lisi) on a small case."""
    import harmonypy

    rng = np.random.default_rng(0)
    types, batches = rng.integers(0, 4, 800), rng.integers(0, 3, 800)
    x = (rng.normal(0, 4, (4, 10))[types] + rng.normal(0, 0.6, (3, 10))[batches]
         + rng.normal(0, 1, (800, 10)))
    meta = pd.DataFrame({"batch": [f"b{b}" for b in batches], "type": [f"t{t}" for t in types]})
    reference = harmonypy.compute_lisi(x, meta, ["batch", "type"], perplexity=20)
    dist, idx = knn_excluding_self(x, 60)
    for column, labels in enumerate((meta["batch"], meta["type"])):
        mine = lisi(dist, idx, labels.to_numpy(), 20)
        np.testing.assert_allclose(mine, reference[:, column], rtol=0, atol=1e-9)
    assert 1.0 - 1e-9 <= mine.min() and mine.max() <= 4.0 + 1e-9


def test_scaled_lisi_runs_from_separate_to_mixed() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 5))
    mixed = rng.integers(0, 2, 600)
    apart = (x[:, 0] > 0).astype(int)
    dist, idx = knn_excluding_self(x, 90)
    assert ilisi_scaled(lisi(dist, idx, mixed, 30), 2) > 0.9
    far = x + np.outer(apart, [50, 0, 0, 0, 0])
    dist, idx = knn_excluding_self(far, 90)
    assert ilisi_scaled(lisi(dist, idx, apart, 30), 2) == pytest.approx(0.0, abs=1e-6)
    assert clisi_scaled(lisi(dist, idx, apart, 30), 2) == pytest.approx(1.0, abs=1e-6)
    assert np.isnan(ilisi_scaled(np.ones(5), 1))


def test_graph_neighbours_are_shortest_paths() -> None:
    from scipy.sparse.csgraph import dijkstra
    from sklearn.neighbors import kneighbors_graph

    x = np.random.default_rng(2).normal(size=(300, 4))
    graph = kneighbors_graph(x, 6, mode="distance")
    dist, idx = graph_knn(graph, 25)
    full = dijkstra(graph.maximum(graph.T), directed=False)
    np.fill_diagonal(full, np.inf)
    np.testing.assert_allclose(dist, np.sort(full, axis=1)[:, :25])
    np.testing.assert_allclose(full[np.arange(300)[:, None], idx], dist)
    # two components: cells beyond reach are missing (-1) and weigh nothing in LISI
    two = sparse.block_diag([graph[:10, :10], graph[:10, :10]]).tocsr()
    dist, idx = graph_knn(two, 15)
    assert (idx[:, 9:] == -1).all() and np.isinf(dist[:, 9:]).all()
    assert np.all(lisi(dist, idx, np.repeat([0, 1], 10), 3) >= 0)


def test_asw_follows_scib() -> None:
    from sklearn.metrics import silhouette_samples, silhouette_score

    rng = np.random.default_rng(3)
    types, batches = rng.integers(0, 3, 300), rng.integers(0, 2, 300)
    x = rng.normal(0, 5, (3, 6))[types] + rng.normal(0, 1, (2, 6))[batches] + rng.normal(
        size=(300, 6))
    assert celltype_asw(x, types) == pytest.approx((silhouette_score(x, types) + 1) / 2)
    expected = np.mean([np.mean(1 - np.abs(silhouette_samples(x[types == t], batches[
        types == t]))) for t in range(3)])
    assert batch_asw(x, batches, types) == pytest.approx(expected)
    assert np.isnan(batch_asw(x, np.zeros(300), types))  # one batch: nothing to judge


def test_single_type_batch_is_named(caplog: pytest.LogCaptureFixture) -> None:
    batches = pd.Series(["r1"] * 4 + ["r2"] * 4)
    types = pd.Series(["T", "B", "T", "B", "T", "T", "T", "T"])
    with caplog.at_level(logging.WARNING, logger="mscflow.cluster.integration_metrics"):
        assert single_type_batches(batches, types) == ["r2"]
    assert "batch 'r2' holds only cell type 'T'" in caplog.text


@pytest.mark.slow
def test_evidence_before_and_after(clustered) -> None:
    adata = clustered["harmony"].copy()
    adata.obs["cell_type"] = adata.obs["truth"].astype(str)
    adata.obs.loc[adata.obs_names[:5], "cell_type"] = "unassigned"
    table, drawn = integration_evidence(adata, settings_for("harmony"))
    assert list(table["stage"]) == ["before", "after"]
    before, after = table.iloc[0], table.iloc[1]
    assert before["representation"] == "X_pca" and after["representation"] == "X_pca_harmony"
    assert before["ilisi"] < 0.2 and after["ilisi"] >= 0.8
    assert after["batch_asw"] > before["batch_asw"]
    assert after["celltype_asw"] >= before["celltype_asw"] - 0.05
    assert after["ari"] > 0.95 > before["ari"]
    assert after["clisi"] > 0.95
    assert table["n_cell_types"].tolist() == [N_GROUPS, N_GROUPS]
    assert "5 unassigned cells left out" in after["note"]
    # "before" is what the cluster job builds without integration: same graph, same UMAP
    np.testing.assert_array_equal(drawn["before"]["umap"], clustered["none"].obsm["X_umap"])
    fig = before_after_figure(drawn, "batch")
    assert len(fig.axes) == 4
    import matplotlib.pyplot as plt

    plt.close(fig)


@pytest.mark.slow
def test_evidence_without_integration_has_one_stage(clustered) -> None:
    adata = clustered["none"].copy()
    adata.obs["cell_type"] = adata.obs["truth"].astype(str)
    table, drawn = integration_evidence(adata, settings_for("none"))
    assert list(table["stage"]) == ["uncorrected"] and list(drawn) == ["uncorrected"]
    assert table["ilisi"].item() < 0.2


@pytest.mark.slow
def test_umap_process_uses_the_integrated_graph(clustered) -> None:
    """The cluster job's UMAP process embeds the Harmony graph as sc.tl.umap would."""
    import scanpy as sc
    from threadpoolctl import threadpool_limits

    from mscflow.cluster.core import umap_alongside

    adata = clustered["harmony"].copy()
    settings = settings_for("harmony")
    with umap_alongside() as umap:
        umap.submit(adata, settings)
        umap.collect(adata)
    inline = adata.copy()
    with threadpool_limits(1):
        sc.tl.umap(inline, min_dist=settings.umap_min_dist, random_state=0, maxiter=30)
    np.testing.assert_array_equal(adata.obsm["X_umap"], inline.obsm["X_umap"])
