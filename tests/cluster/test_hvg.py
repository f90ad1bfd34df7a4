"""Highly variable genes from per-sample statistics equal scanpy's "seurat" flavour."""

from __future__ import annotations

import anndata as ad
import numba
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from helpers import TABULA_MURIS
from scipy import sparse

from mscflow.cluster.hvg import BLOCK_CELLS, highly_variable_genes


def lognormalised(counts: sparse.csr_matrix, batches: np.ndarray) -> ad.AnnData:
    adata = ad.AnnData(counts.astype(np.float32))
    adata.var_names = [f"g{i}" for i in range(adata.n_vars)]
    adata.obs["sample"] = pd.Categorical(batches)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    return adata


def assert_same_as_scanpy(adata: ad.AnnData, n_top: int, batch_key: str | None) -> None:
    ours, theirs = adata.copy(), adata.copy()
    highly_variable_genes(ours, n_top, batch_key=batch_key)
    sc.pp.highly_variable_genes(theirs, n_top_genes=n_top, flavor="seurat", batch_key=batch_key)
    pd.testing.assert_frame_equal(ours.var, theirs.var, check_exact=True)
    assert ours.uns["hvg"] == theirs.uns["hvg"]
    assert ours.var["highly_variable"].sum() == min(n_top, adata.n_vars)


def uneven_batches(n_cells: int = 2 * BLOCK_CELLS + 345, n_genes: int = 400,
                   seed: int = 0) -> ad.AnnData:
    """Blocks of cells that cut through batches, batches of very different size and depth,
    genes no cell of one batch expresses, interleaved batch labels."""
    rng = np.random.default_rng(seed)
    rates = rng.gamma(0.3, 2.0, n_genes)
    depth = rng.lognormal(0, 0.6, n_cells)[:, None]
    counts = rng.poisson(rates[None, :] * depth).astype(np.float32)
    batches = rng.choice(["b", "a", "c", "lonely"], n_cells, p=[0.6, 0.3, 0.0999, 0.0001])
    batches[:2] = "lonely"  # a batch of two cells
    counts[batches == "c", :25] = 0  # genes batch c never expresses
    counts[:, 30] = 0  # a gene nobody expresses
    return lognormalised(sparse.csr_matrix(counts), batches)


@pytest.mark.parametrize("batch_key", ["sample", None])
def test_highly_variable_genes_equals_scanpy(batch_key: str | None) -> None:
    assert_same_as_scanpy(uneven_batches(), 100, batch_key)


def test_highly_variable_genes_equals_scanpy_on_one_thread_and_all_genes() -> None:
    adata = uneven_batches(n_cells=3000, seed=1)
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        assert_same_as_scanpy(adata, 100, "sample")
    finally:
        numba.set_num_threads(previous)
    assert_same_as_scanpy(adata, 10_000, "sample")  # more than there are genes


def test_highly_variable_genes_equals_scanpy_on_tabula_muris() -> None:
    """A real 10x lung channel split into three pseudo-samples of unequal size."""
    counts = sc.read_10x_mtx(TABULA_MURIS)
    counts = counts[np.asarray(counts.X.sum(axis=1)).ravel() >= 500].copy()
    rng = np.random.default_rng(0)
    batches = rng.choice(["x", "y", "z"], counts.n_obs, p=[0.5, 0.35, 0.15])
    adata = lognormalised(counts.X.tocsr(), batches)
    adata.var_names = counts.var_names
    assert_same_as_scanpy(adata, 2000, "sample")


def test_highly_variable_genes_needs_csr() -> None:
    adata = uneven_batches(n_cells=50)
    adata.X = adata.X.toarray()
    with pytest.raises(TypeError, match="CSR"):
        highly_variable_genes(adata, 10)
