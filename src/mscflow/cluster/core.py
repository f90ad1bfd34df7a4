"""Merging samples, normalisation, embedding, Leiden clustering and marker genes."""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc

from mscflow.cluster import _kernels as K
from mscflow.cluster.blocked_pca import randomized_pca, zscore_caps
from mscflow.cluster.hvg import highly_variable_genes
from mscflow.cluster.integration import IntegrationSettings, check_method_available, integrate
from mscflow.config import Settings, runtime_field, settings_section
from mscflow.job import timed

log = logging.getLogger(__name__)


@settings_section("cluster", integration=IntegrationSettings)
class ClusterSettings(Settings):
    """Config section ``cluster`` (fields: its keys in the schema, see config/README.md),
    plus the job's threads, the run's seed and the batch column the run resolved
    (:func:`mscflow.cluster.integration.resolve_batch_key`)."""

    n_jobs: int = runtime_field()
    random_state: int = runtime_field()
    batch_key: str = runtime_field()


def cache_umap_kernels() -> int:
    """Let numba cache umap-learn's compiled kernels on disk; returns how many were enabled.

    umap-learn compiles its kNN-smoothing, membership and layout kernels without
    ``cache=True``, so every fresh process (every cluster job) paid tens of seconds of JIT
    compilation in ``sc.pp.neighbors`` and ``sc.tl.umap``. With caching on, only the first
    run on a machine compiles. A kernel whose Python function also backs another dispatcher
    (umap's parallel and serial layout epochs) is cached only in its serial form, so the two
    never share cache entries. Results are unchanged: the cache holds the same machine code.
    """
    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher
    from umap import layouts, umap_

    dispatchers = [obj for module in (umap_, layouts) for obj in vars(module).values()
                   if isinstance(obj, CPUDispatcher)]
    funcs = [d.py_func for d in dispatchers]
    shared = {f for f in funcs if sum(g is f for g in funcs) > 1}
    enabled = 0
    for dispatcher in dispatchers:
        if dispatcher.py_func in shared and dispatcher.targetoptions.get("parallel"):
            continue
        if isinstance(dispatcher._cache, NullCache) and not dispatcher.overloads:
            dispatcher.enable_caching()
            enabled += 1
    return enabled


def leiden_key(resolution: float) -> str:
    """obs column holding the Leiden clusters at ``resolution``."""
    return f"leiden_{float(resolution):g}"


def merge_samples(samples: Sequence[ad.AnnData]) -> ad.AnnData:
    """Concatenate per-sample AnnData on their shared genes; keep counts in ``layers``."""
    merged = concat_samples(list(samples))
    merged.layers["counts"] = merged.X.copy()
    return merged


def concat_samples(kept: list[ad.AnnData]) -> ad.AnnData:
    """Inner-join concatenation of the non-empty samples, metadata columns as categories."""
    kept = [a for a in kept if a.n_obs > 0]
    if not kept:
        raise ValueError("no sample has cells left after QC; nothing to cluster")
    n_genes = [a.n_vars for a in kept]
    merged = ad.concat(kept, join="inner", merge="same")
    if merged.n_vars < max(n_genes):
        log.warning("merged on %d shared genes (samples had %s)", merged.n_vars, n_genes)
    _metadata_as_categories(merged)
    return merged


def _metadata_as_categories(merged: ad.AnnData) -> None:
    for col in ("sample", "tissue", "condition", "species"):
        if col in merged.obs:
            merged.obs[col] = merged.obs[col].astype("category")


def merge_sample_files(paths: Sequence[str | Path], keep_counts: bool = False) -> ad.AnnData:
    """Read and merge per-sample h5ad files (counts in ``X``) holding one copy of the merged
    matrix: anndata's ``concat_on_disk`` writes the merged file to a temporary folder
    (``TMPDIR``; uncompressed, about the merged matrix's size) a block at a time, then it
    is read back. The same object as :func:`concat_samples` of the read files, which would
    hold the inputs and the merged copy at once.

    ``keep_counts`` copies the counts into ``layers["counts"]`` (for scVI, which trains on
    them); the clustering needs none, and later steps read counts from the per-sample files
    (:mod:`mscflow.inputs.sample_counts`).
    """
    from anndata.experimental import concat_on_disk

    shapes = {}
    for path in paths:
        backed = ad.read_h5ad(path, backed="r")
        shapes[str(path)] = backed.shape
        backed.file.close()
    kept = [path for path, shape in shapes.items() if shape[0] > 0]
    if not kept:
        raise ValueError("no sample has cells left after QC; nothing to cluster")
    if len(kept) == 1:  # concat_on_disk would copy the file whole (uns, obsm and all)
        merged = ad.concat([ad.read_h5ad(kept[0])], join="inner", merge="same")
    else:
        with tempfile.TemporaryDirectory(prefix="mscflow-merge-") as folder:
            merged_path = Path(folder) / "merged.h5ad"
            concat_on_disk([Path(path) for path in kept], merged_path, join="inner",
                           merge="same")
            merged = ad.read_h5ad(merged_path)
    n_genes = [shapes[path][1] for path in kept]
    if merged.n_vars < max(n_genes):
        log.warning("merged on %d shared genes (samples had %s)", merged.n_vars, n_genes)
    _metadata_as_categories(merged)
    if keep_counts:
        merged.layers["counts"] = merged.X.copy()
    return merged


def normalise(adata: ad.AnnData, target_sum: float, block_cells: int = 10_000) -> None:
    """Total-count normalisation and log1p of X, in place.

    A sparse CSR ``X`` is normalised ``block_cells`` rows at a time with scanpy's own
    ``normalize_total`` and ``log1p``, the values written back into ``X``: every step is
    per cell (``target_sum`` is fixed), so the result is scanpy's to the bit, without the
    second copy of the whole matrix that ``normalize_total`` makes.
    """
    from scipy import sparse

    x = adata.X
    if not (sparse.issparse(x) and x.format == "csr" and x.dtype == np.float32):
        sc.pp.normalize_total(adata, target_sum=target_sum)
        sc.pp.log1p(adata)
        return
    for start in range(0, adata.n_obs, block_cells):
        stop = min(start + block_cells, adata.n_obs)
        block = ad.AnnData(x[start:stop])
        sc.pp.normalize_total(block, target_sum=target_sum)
        sc.pp.log1p(block)
        done = block.X
        if done.nnz != x.indptr[stop] - x.indptr[start]:
            raise RuntimeError("normalisation changed the sparsity pattern of a block")
        x.data[x.indptr[start]:x.indptr[stop]] = done.data
    adata.uns["log1p"] = {"base": None}


def neighbours(adata: ad.AnnData, settings: ClusterSettings, n_pcs: int,
               use_rep: str = "X_pca") -> str:
    """kNN graph on the PCA (or on the integrated embedding ``use_rep``), by
    ``neighbors_method``; returns the search used (logged, and kept in
    ``uns['neighbors']['params']['search']``).

    "auto" (default): exact "brute" up to ``approximate_neighbors_above`` cells,
    "pynndescent" above (exact search grows with the square of the cell count; at 86k cells
    scanpy's pynndescent settings found 97.7 % of the exact 15 neighbours). "brute"
    ("sklearn" is the same): exact search by scikit-learn's blocked distance products on all
    threads, 12 s at 86k cells x 30 PCs on 2 cores; "kd_tree": exact, scikit-learn's k-d
    tree (57 s there: 30 dimensions are too many for a tree); "pynndescent": scanpy's
    approximate search (its numba code compiles in every fresh process; seeded, so reruns
    give the same graph).
    """
    from sklearn.neighbors import KNeighborsTransformer

    method = neighbour_search(settings, adata.n_obs)
    transformer = None
    if method in ("brute", "sklearn", "kd_tree"):
        transformer = KNeighborsTransformer(
            n_neighbors=settings.n_neighbors, n_jobs=settings.n_jobs,
            algorithm="kd_tree" if method == "kd_tree" else "brute")
    log.info("neighbours: %s search (neighbors_method %s, %d cells)", method,
             settings.neighbors_method, adata.n_obs)
    sc.pp.neighbors(adata, n_neighbors=settings.n_neighbors, random_state=settings.random_state,
                    transformer=transformer, use_rep=use_rep,
                    n_pcs=n_pcs if use_rep == "X_pca" else None)
    adata.uns["neighbors"]["params"]["search"] = method
    return method


def neighbour_search(settings: ClusterSettings, n_cells: int) -> str:
    """The kNN search ``neighbors_method`` means for ``n_cells`` cells ("auto": exact
    "brute" up to ``approximate_neighbors_above`` cells, "pynndescent" above)."""
    if settings.neighbors_method != "auto":
        return settings.neighbors_method
    return "pynndescent" if n_cells > settings.approximate_neighbors_above else "brute"


def spectral_solver(settings: ClusterSettings, n_cells: int) -> str:
    """Eigen-solver of UMAP's spectral start for ``n_cells`` cells: "eigsh" (ARPACK,
    umap-learn's own choice below 2,000,000 cells) up to ``approximate_neighbors_above``
    cells, "lobpcg" (umap-learn's choice above 2,000,000) beyond.

    ARPACK keeps sqrt(n) Lanczos vectors of n float64 values, n^1.5 x 8 bytes: 6.5 GB at
    868k cells, more than the rest of UMAP. LOBPCG keeps a few vectors. On a connected
    200k-cell kNN graph it found the same two eigenvectors (|r| 1.000 and 0.997 with
    ARPACK's) in 15 s and 0.73 GB peak, ARPACK in 44 s and 1.35 GB.
    """
    return "lobpcg" if n_cells > settings.approximate_neighbors_above else "eigsh"


@contextmanager
def umap_spectral_solver(solver: str) -> Iterator[None]:
    """Within the block, umap-learn's spectral start uses ``solver`` ("eigsh" or "lobpcg").

    umap-learn picks its solver inside ``umap.spectral._spectral_layout`` by a fixed
    2,000,000-cell threshold that no argument of ``sc.tl.umap`` reaches, so the block binds
    that function's ``method`` (for one graph and for each connected component alike).
    """
    from umap import spectral

    original = spectral._spectral_layout
    spectral._spectral_layout = functools.partial(original, method=solver)
    try:
        yield
    finally:
        spectral._spectral_layout = original


def run_umap(adata: ad.AnnData, *, min_dist: float, random_state: int, maxiter: int | None,
             solver: str) -> None:
    """``sc.tl.umap`` on ``adata``'s neighbour graph, its spectral start by ``solver``
    (:func:`spectral_solver`)."""
    log.info("UMAP: spectral start by %s (%d cells)", solver, adata.n_obs)
    with umap_spectral_solver(solver):
        sc.tl.umap(adata, min_dist=min_dist, random_state=random_state, maxiter=maxiter)


def leiden(adata: ad.AnnData, settings: ClusterSettings, resolution: float) -> None:
    """Leiden at one resolution; flavour "igraph" (C, fast) or "leidenalg"."""
    kwargs: dict = {"n_iterations": settings.leiden_iterations}
    if settings.leiden_flavor == "igraph":
        kwargs["directed"] = False
    sc.tl.leiden(adata, resolution=resolution, key_added=leiden_key(resolution),
                 flavor=settings.leiden_flavor, random_state=settings.random_state, **kwargs)


def embed_and_cluster(adata: ad.AnnData, settings: ClusterSettings) -> None:
    """HVG across samples, PCA, neighbours, Leiden at every resolution, UMAP (in place).

    The PCA uses ``pca_solver`` ("arpack" by default: at 86k cells on a quiet 2-core machine
    it took 18 s, scanpy's sparse "covariance_eigh" 42 s), UMAP ``umap_epochs`` optimisation
    epochs. To run UMAP beside other work, use :func:`embed_graph`, :func:`leiden_all` and
    :func:`umap_alongside` (as the cluster rule does).
    """
    embed_graph(adata, settings)
    leiden_all(adata, settings)
    with timed("UMAP"):
        run_umap(adata, min_dist=settings.umap_min_dist, random_state=settings.random_state,
                 maxiter=settings.umap_epochs, solver=spectral_solver(settings, adata.n_obs))


def pca(adata: ad.AnnData, settings: ClusterSettings, n_pcs: int) -> None:
    """PCA of the highly variable genes (``obsm["X_pca"]``, ``varm["PCs"]``, ``uns["pca"]``).

    With ``scale`` each gene is z-scored first and clipped at ``scale_max_value``, as
    ``sc.pp.scale(max_value=...)`` then ``sc.pp.pca`` would, but sparse: the genes are
    divided by their standard deviation (ddof 1, as scanpy; constant genes by 1), values
    above mean + max x sd are capped, and the PCA centres implicitly. (Only values below
    mean - max x sd, zeros of a gene whose mean exceeds max sd, are left unclipped.) Scaling
    keeps a few highly expressed genes from dominating the components; it also helps
    Harmony where batches differ in sequencing depth (on the demo, iLISI 0.85 instead of
    0.72 with 30 PCs).
    """
    if settings.pca_solver == "randomized_blocks":
        blocked_pca(adata, settings, n_pcs)
        return
    if not settings.scale:
        sc.pp.pca(adata, n_comps=n_pcs, mask_var="highly_variable",
                  svd_solver=settings.pca_solver, random_state=settings.random_state)
        return
    from scipy import sparse

    genes = adata.var["highly_variable"].to_numpy()
    x = sparse.csr_matrix(adata.X[:, genes], dtype=np.float32)  # a new matrix already
    n = x.shape[0]
    mean, sq = _column_means_float32(x)
    sd, caps = zscore_caps(mean, np.maximum(sq - mean**2, 0) * n / max(n - 1, 1),
                           settings.scale_max_value)
    _scale_columns_reversing_rows(x, (1 / sd).astype(np.float32), caps.astype(np.float32))
    scaled = ad.AnnData(x)
    sc.pp.pca(scaled, n_comps=n_pcs, svd_solver=settings.pca_solver,
              random_state=settings.random_state)
    _store_pca(adata, genes, scaled.obsm["X_pca"], scaled.varm["PCs"], scaled.uns["pca"],
               settings)


def _store_pca(adata: ad.AnnData, genes: np.ndarray, scores: np.ndarray,
               loadings: np.ndarray, uns: dict, settings: ClusterSettings) -> None:
    """Write a PCA of the HVG columns ``genes`` (mask or indices) into ``adata`` as scanpy
    does: ``obsm["X_pca"]``, ``uns["pca"]`` (with the scaling in its params) and
    ``varm["PCs"]`` (zero for the other genes)."""
    adata.obsm["X_pca"] = scores
    adata.uns["pca"] = {**uns, "params": {**uns["params"], "mask_var": "highly_variable",
                                          "scaled": bool(settings.scale),
                                          "max_value": settings.scale_max_value or 0}}
    full = np.zeros((adata.n_vars, loadings.shape[1]), dtype=loadings.dtype)
    full[genes] = loadings
    adata.varm["PCs"] = full


def blocked_pca(adata: ad.AnnData, settings: ClusterSettings, n_pcs: int) -> None:
    """:func:`pca` by :func:`mscflow.cluster.blocked_pca.randomized_pca` (``pca_solver``
    "randomized_blocks"): the same scaling, no copy of the HVG matrix; same keys as
    :func:`pca` writes."""

    genes = np.flatnonzero(adata.var["highly_variable"].to_numpy())
    scores, loadings, variance, ratio = randomized_pca(
        adata.X, genes, n_pcs, zscore=settings.scale, max_value=settings.scale_max_value,
        random_state=settings.random_state)
    _store_pca(adata, genes, scores, loadings.astype(np.float32),
               {"params": {"zero_center": True, "svd_solver": "randomized_blocks"},
                "variance": variance, "variance_ratio": ratio}, settings)


def _column_means_float32(x) -> tuple[np.ndarray, np.ndarray]:
    """Column means of float32 CSR ``x`` and of its squares, as float64, computed as scipy's
    ``x.mean(axis=0)`` and ``x.multiply(x).mean(axis=0)`` compute them (each value times
    float32(1/n), summed in float32 over the rows in order) but without their copies of
    the matrix: the same numbers to the bit."""
    mean, sq = K.column_means_kernel(x.indptr, x.indices, x.data, x.shape[1],
                                    np.float32(1.0 / x.shape[0]))
    return mean.astype(np.float64), sq.astype(np.float64)


def _scale_columns_reversing_rows(x, factors: np.ndarray, caps: np.ndarray | None = None
                                  ) -> None:
    """Cap the values of CSR ``x`` at ``caps`` and multiply them by ``factors`` (both per
    column), in place; each row's stored values are left in reverse order.

    This used to be ``np.minimum(x.data, caps[x.indices])`` and the product
    ``x @ diags(factors)``: two more copies of the HVG matrix. scipy's sparse product writes
    each row's values in reverse order and the arpack PCA sums them in the order stored, so
    the in-place version keeps that order: the PCA, and every result after it, stays the
    same to the bit.
    """
    if caps is None:
        caps = np.full(x.shape[1], np.inf, dtype=x.dtype)
    K.cap_scale_and_reverse_rows(x.indptr, x.indices, x.data, caps.astype(x.dtype),
                                factors.astype(x.dtype))
    x.has_sorted_indices = False


def embed_graph(adata: ad.AnnData, settings: ClusterSettings) -> None:
    """HVG across samples, PCA, batch integration (:func:`mscflow.cluster.integration.integrate`)
    and the neighbour graph on the integrated embedding (in place)."""
    cache_umap_kernels()
    batch_key = "sample" if adata.obs["sample"].nunique() > 1 else None
    with timed("HVG"):
        # scanpy's seurat flavour, from one pass over the matrix (mscflow.cluster.hvg)
        highly_variable_genes(adata, settings.n_top_genes, batch_key=batch_key)
    n_pcs = min(settings.n_pcs, adata.n_obs - 1, int(adata.var["highly_variable"].sum()) - 1)
    with timed("PCA"):
        pca(adata, settings, n_pcs)
    with timed(f"integration ({settings.integration.method})"):
        done = integrate(adata, settings.integration, batch_key=settings.batch_key,
                         n_neighbors=settings.n_neighbors, n_jobs=settings.n_jobs,
                         random_state=settings.random_state)
    if not done.graph_built:
        with timed("neighbours"):
            neighbours(adata, settings, n_pcs, use_rep=done.use_rep)


def leiden_all(adata: ad.AnnData, settings: ClusterSettings) -> None:
    """Leiden at every resolution of ``settings`` (in place)."""
    with timed("Leiden"):
        for res in settings.resolutions:
            leiden(adata, settings, res)


class UmapProcess:
    """``sc.tl.umap`` in a separate, single-threaded process (:mod:`mscflow.cluster._umap_process`).

    Made by :func:`umap_alongside`, which starts the process at once (it imports scanpy and
    umap-learn, ~8 s, while this process reads and merges). :meth:`submit` hands it the
    neighbour graph, the PCA and the settings; it then computes what an in-process
    ``sc.tl.umap`` call would (same seed, same result) while this process goes on, and
    :meth:`collect` stores the result.
    """

    def __init__(self) -> None:
        self.folder = tempfile.TemporaryDirectory(prefix="mscflow-umap-")
        self.dir = Path(self.folder.name)
        cmd = [sys.executable, "-m", "mscflow.cluster._umap_process", str(self.dir / "input.npz"),
               str(self.dir / "output.npz"), str(os.getpid())]
        # one thread: UMAP's layout is serial anyway, and the result must not depend on cores
        env = {**os.environ, **dict.fromkeys(
            ["NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"],
            "1")}
        with open(self.dir / "umap.log", "w") as out:  # a file: a pipe could fill up
            self.process = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=out,
                                            stderr=subprocess.STDOUT, text=True)
        self.started = time.perf_counter()

    def submit(self, adata: ad.AnnData, settings: ClusterSettings) -> None:
        """Write ``adata``'s graph, PCA and the UMAP settings; let the process start."""
        neigh = adata.uns["neighbors"]
        graph = adata.obsp[neigh.get("connectivities_key", "connectivities")].tocsr()
        params = dict(neigh["params"])
        use_rep = params.get("use_rep", "X_pca")
        info = {"use_rep": use_rep, "params": params, "min_dist": settings.umap_min_dist,
                "random_state": settings.random_state, "maxiter": settings.umap_epochs,
                "solver": spectral_solver(settings, adata.n_obs)}
        with open(self.dir / "input.npz", "wb") as f:
            np.savez(f, n_obs=adata.n_obs, data=graph.data, indices=graph.indices,
                     indptr=graph.indptr, rep=adata.obsm[use_rep],
                     settings=json.dumps(info, default=_json_default))
        log.info("UMAP (own process): spectral start by %s (%d cells)", info["solver"],
                 adata.n_obs)
        self.started = time.perf_counter()
        try:
            self.process.stdin.write("go\n")
            self.process.stdin.close()
        except BrokenPipeError:  # the process already failed; collect() reports its output
            pass

    def collect(self, adata: ad.AnnData) -> None:
        """Wait for the process; store ``X_umap`` and ``uns["umap"]`` in ``adata``."""
        if self.process.wait() != 0:
            output = (self.dir / "umap.log").read_text()
            raise RuntimeError(f"UMAP process failed (exit {self.process.returncode}):\n{output}")
        with np.load(self.dir / "output.npz") as f:
            adata.obsm["X_umap"] = f["X_umap"]
            adata.uns["umap"] = {"params": json.loads(str(f["params"]))}
        log.info("step UMAP (own process, alongside): %.2f s", time.perf_counter() - self.started)

    def stop(self) -> None:
        """Kill the process if it still runs and remove its temporary folder."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if not self.process.stdin.closed:
            self.process.stdin.close()
        self.folder.cleanup()


@contextmanager
def umap_alongside() -> Iterator[UmapProcess]:
    """A :class:`UmapProcess`, stopped and cleaned up when the block ends (also on errors)."""
    job = UmapProcess()
    try:
        yield job
    finally:
        job.stop()


def _json_default(value: object) -> object:
    """JSON for the numpy scalars scanpy keeps in ``uns["neighbors"]["params"]``."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__} for the UMAP process")


def marker_genes(adata: ad.AnnData, groupby: str, method: str, n_genes: int = 25,
                 block_genes: int = 500) -> pd.DataFrame:
    """Top marker genes per cluster as a tidy table (rank_genes_groups on log data, stored
    in ``uns["markers_<groupby>"]``).

    The t-tests run on blocks of ``block_genes`` genes (:func:`rank_genes_by_blocks`): the
    same tables and ``uns`` as ``sc.tl.rank_genes_groups`` to the bit, which copies the rest
    of the cells once per cluster (a second copy of the whole matrix at its peak); other
    methods call scanpy directly.
    """
    key = f"markers_{groupby}"
    if method in ("t-test", "t-test_overestim_var"):
        rank_genes_by_blocks(adata, groupby, method, n_genes, key, block_genes)
    else:
        sc.tl.rank_genes_groups(adata, groupby=groupby, method=method, n_genes=n_genes,
                                key_added=key)
    df = sc.get.rank_genes_groups_df(adata, group=None, key=key)
    df.insert(0, "clustering", groupby)
    return df.rename(columns={"names": "gene"})


def rank_genes_by_blocks(adata: ad.AnnData, groupby: str, method: str, n_genes: int,
                         key_added: str, block_genes: int = 500) -> None:
    """``sc.tl.rank_genes_groups(adata, groupby, method=<t-test>, n_genes=...)`` (each group
    against the rest, Benjamini-Hochberg), computed ``block_genes`` genes at a time.

    scanpy's own statistics (``_RankGenes``: per-gene means and variances of each group
    and of the rest, Welch's t-test) run on each block of genes; per gene they are the
    same numbers as on the whole matrix (the sums run over the cells in the same order).
    The Benjamini-Hochberg correction and the choice of the top ``n_genes`` then run on
    all genes, as scanpy does. Memory beyond ``X``: one block's copies instead of a
    whole-matrix copy of the rest of the cells per group.
    """
    from scanpy.tools._rank_genes_groups import _RankGenes, _select_top_n
    from statsmodels.stats.multitest import multipletests

    x = adata.X
    n_all = adata.n_vars
    obs = adata.obs[[groupby]]
    scores = pvals = means = means_rest = groups = expm1 = None
    for start in range(0, n_all, block_genes):
        stop = min(start + block_genes, n_all)
        block = ad.AnnData(x[:, start:stop], obs=obs, uns={"log1p": adata.uns.get("log1p", {})})
        test = _RankGenes(block, "all", groupby, reference="rest", use_raw=False)
        if scores is None:
            groups, expm1 = test.groups_order, test.expm1_func
            shape = (len(groups), n_all)
            scores, pvals = np.zeros(shape), np.zeros(shape)
            means, means_rest = np.zeros(shape), np.zeros(shape)
        for g, group_scores, group_pvals in test.t_test(method):
            scores[g, start:stop] = group_scores
            pvals[g, start:stop] = group_pvals
        means[:, start:stop] = test.means
        means_rest[:, start:stop] = test.means_rest
    n_top = min(n_genes, n_all)
    columns: dict[str, dict[str, np.ndarray]] = {
        c: {} for c in ("names", "scores", "pvals", "pvals_adj", "logfoldchanges")}
    for g, name in enumerate(str(group) for group in groups):
        top = _select_top_n(scores[g], n_top)
        columns["names"][name] = adata.var_names[top]
        columns["scores"][name] = scores[g][top]
        columns["pvals"][name] = pvals[g][top]
        finite = np.where(np.isnan(pvals[g]), 1, pvals[g])
        columns["pvals_adj"][name] = multipletests(finite, alpha=0.05, method="fdr_bh")[1][top]
        change = (expm1(means[g]) + 1e-9) / (expm1(means_rest[g]) + 1e-9)
        columns["logfoldchanges"][name] = np.log2(change[top])
    dtypes = {"names": "O", "scores": "float32", "logfoldchanges": "float32",
              "pvals": "float64", "pvals_adj": "float64"}
    result = {"params": {"groupby": groupby, "reference": "rest", "method": method,
                         "use_raw": False, "layer": None, "corr_method": "benjamini-hochberg"}}
    for column in columns:  # scanpy's order
        result[column] = pd.DataFrame(columns[column]).to_records(
            index=False, column_dtypes=dtypes[column])
    adata.uns[key_added] = result


def cluster_sizes(obs: pd.DataFrame, cluster_key: str) -> pd.DataFrame:
    """Cells per cluster and sample (long table)."""
    table = obs.groupby([cluster_key, "sample"], observed=True).size()
    return table.rename("n_cells").reset_index().rename(columns={cluster_key: "cluster"})


def resolution_agreement(obs: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Cluster counts and pairwise adjusted Rand index between resolutions."""
    from sklearn.metrics import adjusted_rand_score

    rows = []
    for a in keys:
        for b in keys:
            rows.append({
                "clustering_a": a, "clustering_b": b,
                "n_clusters_a": obs[a].nunique(), "n_clusters_b": obs[b].nunique(),
                "adjusted_rand_index": adjusted_rand_score(obs[a], obs[b]),
            })
    return pd.DataFrame(rows)


def cluster_samples(paths: Sequence[str | Path], settings: ClusterSettings
                    ) -> tuple[ad.AnnData, pd.DataFrame, pd.DataFrame]:
    """The clustering stage: merge the QC-filtered samples, normalise, HVG, PCA, batch
    integration, kNN, Leiden at every resolution, UMAP (in its own process, beside Leiden
    and markers) and marker genes of the default resolution.

    Returns (clustered object: log-normalised ``X``, no counts layer; markers table,
    resolution agreement table).
    """
    check_method_available(settings.integration.method)  # before hours of work
    with umap_alongside() as umap:  # imports now, runs UMAP on the other core later
        with timed("read + merge"):
            adata = merge_sample_files(paths, keep_counts=settings.integration.method == "scvi")
        log.info("merged %d cells x %d genes from %d samples", adata.n_obs, adata.n_vars,
                 adata.obs["sample"].nunique())
        with timed("normalise"):
            normalise(adata, settings.target_sum)
        embed_graph(adata, settings)
        adata.layers.pop("counts", None)  # scVI's training input; later steps read the QC files
        umap.submit(adata, settings)
        leiden_all(adata, settings)
        keys = [leiden_key(r) for r in settings.resolutions]
        for key in keys:
            log.info("%s: %d clusters", key, adata.obs[key].nunique())
        with timed("markers"):
            markers = marker_genes(adata, leiden_key(settings.default_resolution),
                                   settings.marker_method)
        umap.collect(adata)
    return adata, markers, resolution_agreement(adata.obs, keys)
