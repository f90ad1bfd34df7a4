"""Batch integration of the merged cells: Harmony (default), BBKNN, scVI or none.

Integration changes only what the clustering stage builds its graph from: Harmony and scVI
add a corrected embedding (``obsm["X_pca_harmony"]``, ``obsm["X_scVI"]``) that the
neighbour graph, Leiden and UMAP use; BBKNN replaces the neighbour graph itself. ``X``, the
counts and ``X_pca`` stay as they were, so QC, scoring, pseudobulk and the contrasts never
see corrected values.

Where the decisions live:

* :func:`resolve_batch_key` (called by ``cluster.smk`` before any job): which sample-sheet
  column names the batches (``cluster.integration.batch_key``, else ``batch`` when the
  sheet has it, else ``sample``), checked against the sheet.
* :func:`integrate` (inside the cluster job): skips with a log line when there is one batch
  or the method is ``none``, checks batch sizes, runs the method and records what it did in
  ``uns["integration"]``.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import anndata as ad
import numpy as np
import pandas as pd

from mscflow.config import Settings, settings_section
from mscflow.errors import ConfigError, InputDataError, SampleSheetError
from mscflow.inputs.samplesheet import FILE_COLUMNS

log = logging.getLogger(__name__)

# Sheet column used as the batch when the config names none and the sheet has it.
DEFAULT_BATCH_COLUMN = "batch"
# The embedding each method writes (BBKNN writes a graph built on X_pca).
INTEGRATED_REP = {"harmony": "X_pca_harmony", "scvi": "X_scVI", "bbknn": "X_pca",
                  "none": "X_pca"}
SCVI_INSTALL = ('pip install torch==2.13.0 (the CPU build; on a machine with only PyPI add '
                '--index-url https://download.pytorch.org/whl/cpu), then pip install -e ".[scvi]"')


@settings_section("cluster.integration.harmony")
class HarmonySettings(Settings):
    """``cluster.integration.harmony``: harmonypy's parameters (schema; config/README.md)."""


@settings_section("cluster.integration.bbknn")
class BbknnSettings(Settings):
    """``cluster.integration.bbknn``: bbknn's parameters."""


@settings_section("cluster.integration.scvi")
class ScviSettings(Settings):
    """``cluster.integration.scvi``: the scVI model and its training."""


@settings_section("cluster.integration.metrics")
class IntegrationMetricsSettings(Settings):
    """``cluster.integration.metrics``: LISI perplexity and the silhouettes' cell budget."""


@settings_section("cluster.integration", harmony=HarmonySettings, bbknn=BbknnSettings,
                  scvi=ScviSettings, metrics=IntegrationMetricsSettings)
class IntegrationSettings(Settings):
    """``cluster.integration``: method, batch column and per-method parameters."""


# ------------------------------------------------------------------------ the batch column


def batch_key(sheet_columns: Iterable[str], configured: str | None) -> str:
    """The sample-sheet column naming each sample's batch.

    ``configured`` (``cluster.integration.batch_key``) when set, which must then be a
    column of the sheet; else ``batch`` when the sheet has that column, else ``sample``.
    Raises :class:`ConfigError` listing the sheet's columns.
    """

    columns = [c for c in sheet_columns if c not in FILE_COLUMNS]
    if configured is None:
        return DEFAULT_BATCH_COLUMN if DEFAULT_BATCH_COLUMN in columns else "sample"
    if configured not in columns:
        raise ConfigError(
            f"config key 'cluster.integration.batch_key' is '{configured}', which is not a "
            f"column of the sample sheet (its columns: {columns}). Add a '{configured}' "
            "column to the sheet, name one of these columns, or set batch_key: null (the "
            "sheet's `batch` column when present, else `sample`)."
        )
    return configured


def resolve_batch_key(samples: pd.DataFrame, configured: str | None) -> str:
    """:func:`batch_key` of the sheet, with every sample's batch value checked non-empty.

    Raises :class:`SampleSheetError` naming the samples without a batch.
    """
    key = batch_key(samples.columns, configured)
    values = samples[key].astype(str).str.strip()
    empty = list(samples.index[values == ""])
    if empty:
        raise SampleSheetError(
            f"sample sheet '{samples.attrs.get('path', 'config/samples.tsv')}': column "
            f"'{key}' (the batch column of cluster.integration) is empty for sample(s) "
            f"{empty}; give every sample its batch (e.g. the 10x run or processing day)."
        )
    return key


def batch_labels(obs: pd.DataFrame, key: str) -> pd.Series:
    """The batch of every cell as a categorical; a clear error when obs lacks the column."""
    if key not in obs:
        raise InputDataError(
            f"the cells carry no '{key}' column (obs has {list(obs.columns)}); the batch "
            "column is copied from the sample sheet by the QC step: rerun QC after adding "
            f"'{key}' to the sheet, or set cluster.integration.batch_key to a sheet column."
        )
    return obs[key].astype(str).astype("category")


def check_batch_sizes(batches: pd.Series, *, method: str, n_neighbors: int,
                      neighbors_within_batch: int) -> None:
    """Stop (BBKNN) or warn (Harmony, scVI) when a batch has fewer cells than the graph needs.

    BBKNN takes ``neighbors_within_batch`` neighbours from every batch, so each batch needs
    more cells than that; a batch smaller than ``n_neighbors`` cannot fill one cell's
    neighbourhood with its own cells and its correction rests on very few cells.
    """
    sizes = batches.value_counts().sort_index()
    if method == "bbknn":
        small = sizes[sizes <= neighbors_within_batch]
        if len(small):
            raise InputDataError(
                f"batch(es) {_named(small)} have at most cluster.integration.bbknn."
                f"neighbors_within_batch = {neighbors_within_batch} cells; BBKNN takes that "
                "many neighbours from every batch. Merge the batch with another in the "
                "sample sheet's batch column, lower neighbors_within_batch, or use "
                "method: harmony."
            )
    small = sizes[sizes < n_neighbors]
    if len(small):
        log.warning("batch(es) %s have fewer cells than cluster.n_neighbors = %d; their "
                    "correction rests on very few cells (merge them with another batch in "
                    "the sample sheet if they were processed alike)", _named(small),
                    n_neighbors)


def _named(sizes: pd.Series) -> str:
    return ", ".join(f"'{b}' ({n} cells)" for b, n in sizes.items())


def warn_confounded(obs: pd.DataFrame, key: str) -> None:
    """Warn when, within a tissue, each batch holds one condition only: integration then
    removes the condition difference from the embedding too (scores are not affected)."""
    if key in ("sample", "condition") or not {"tissue", "condition"} <= set(obs.columns):
        return
    for tissue, group in obs.groupby("tissue", observed=True):
        per_batch = group.groupby(key, observed=True)["condition"].nunique()
        if group["condition"].nunique() > 1 and len(per_batch) > 1 and (per_batch == 1).all():
            log.warning("in tissue '%s' every batch of '%s' holds a single condition: the "
                        "integration cannot tell batch from condition and removes both from "
                        "the embedding and clusters (scores and contrasts use uncorrected "
                        "data)", tissue, key)


# --------------------------------------------------------------------------- the methods


@dataclass
class Integration:
    """What :func:`integrate` did: stored as ``uns["integration"]``."""

    method: str  # the method applied: harmony, bbknn, scvi or none
    requested: str  # the configured method
    batch_key: str
    n_batches: int
    use_rep: str  # the embedding the graph was built on
    graph_built: bool  # True when the method wrote the neighbour graph itself (BBKNN)
    note: str = ""

    def to_uns(self) -> dict:
        """Plain values for ``uns`` (h5ad-writable)."""
        return asdict(self)


def check_method_available(method: str) -> None:
    """scVI needs the optional scvi-tools extra: say how to install it when it is missing."""
    if method == "scvi" and importlib.util.find_spec("scvi") is None:
        raise ConfigError(
            "cluster.integration.method is 'scvi' but scvi-tools is not installed in this "
            f"environment. Install the extra: {SCVI_INSTALL}; or choose method: harmony."
        )


def integrate(adata: ad.AnnData, settings: IntegrationSettings, *, batch_key: str,
              n_neighbors: int, n_jobs: int, random_state: int) -> Integration:
    """Correct the PCA (Harmony, scVI) or build a batch-balanced graph (BBKNN), in place.

    Needs ``obsm["X_pca"]`` (and ``layers["counts"]`` and ``var["highly_variable"]`` for
    scVI). With one batch, or ``method: none``, nothing changes and the log says why.
    """
    method = settings.method
    batches = batch_labels(adata.obs, batch_key)
    n_batches = batches.nunique()
    skipped = Integration("none", method, batch_key, n_batches, "X_pca", False)
    if method == "none":
        log.info("integration: none (cluster.integration.method); %d batches of '%s' left "
                 "as they are", n_batches, batch_key)
        adata.uns["integration"] = skipped.to_uns()
        return skipped
    if n_batches < 2:
        skipped.note = f"one batch ('{batches.iloc[0]}' of '{batch_key}'): nothing to integrate"
        log.info("integration skipped: %s", skipped.note)
        adata.uns["integration"] = skipped.to_uns()
        return skipped
    check_method_available(method)
    check_batch_sizes(batches, method=method, n_neighbors=n_neighbors,
                      neighbors_within_batch=settings.bbknn.neighbors_within_batch)
    warn_confounded(adata.obs, batch_key)
    log.info("integration: %s over %d batches of '%s' (%s)", method, n_batches, batch_key,
             ", ".join(f"{b}: {n}" for b, n in batches.value_counts().sort_index().items()))
    done = Integration(method, method, batch_key, n_batches, INTEGRATED_REP[method],
                       graph_built=method == "bbknn")
    if method == "harmony":
        adata.obsm[done.use_rep] = run_harmony(adata.obsm["X_pca"], batches, settings.harmony,
                                               n_jobs=n_jobs, random_state=random_state)
    elif method == "scvi":
        adata.obsm[done.use_rep] = run_scvi(adata, batches, settings.scvi, n_jobs=n_jobs,
                                            random_state=random_state)
    else:
        run_bbknn(adata, batches, settings.bbknn)
    adata.uns["integration"] = done.to_uns()
    return done


def run_harmony(pca: np.ndarray, batches: pd.Series, settings: HarmonySettings, *,
                n_jobs: int, random_state: int) -> np.ndarray:
    """Harmony-corrected PCA (cells x PCs) from harmonypy, called directly.

    scanpy 1.11's ``harmony_integrate`` transposes harmonypy 2's result (cells x PCs) and
    fails, so the call is made here; the result is the same for any number of threads.
    """
    import harmonypy

    meta = pd.DataFrame({"batch": batches.to_numpy()})
    ho = harmonypy.run_harmony(
        np.asarray(pca, dtype=np.float64), meta, ["batch"], theta=settings.theta,
        lamb=settings.lamb, sigma=settings.sigma, nclust=settings.nclust,
        max_iter_harmony=settings.max_iter, random_state=random_state, verbose=False,
        ncores=n_jobs)
    corrected = np.asarray(ho.Z_corr)
    if corrected.shape[0] != len(batches):  # harmonypy < 0.1 returned PCs x cells
        corrected = corrected.T
    return np.ascontiguousarray(corrected, dtype=np.float32)


def run_bbknn(adata: ad.AnnData, batches: pd.Series, settings: BbknnSettings) -> None:
    """BBKNN's batch-balanced neighbour graph on ``X_pca`` (obsp and ``uns["neighbors"]``)."""
    import bbknn

    column = "_integration_batch"
    adata.obs[column] = batches.to_numpy()
    try:
        kwargs = {"trim": settings.trim} if settings.trim is not None else {}
        bbknn.bbknn(adata, batch_key=column, use_rep="X_pca",
                    neighbors_within_batch=settings.neighbors_within_batch,
                    n_pcs=adata.obsm["X_pca"].shape[1], computation=settings.computation,
                    **kwargs)
    finally:
        del adata.obs[column]
    params = adata.uns["neighbors"]["params"]
    params["bbknn"]["batch_key"] = str(batches.name)
    params["n_pcs"] = int(params["n_pcs"])


def run_scvi(adata: ad.AnnData, batches: pd.Series, settings: ScviSettings, *, n_jobs: int,
             random_state: int) -> np.ndarray:
    """scVI latent space (cells x n_latent) trained on the raw counts of the highly
    variable genes, on the CPU with ``n_jobs`` threads (identical for the same threads)."""
    check_method_available("scvi")
    import scvi
    import torch

    torch.set_num_threads(max(1, n_jobs))
    scvi.settings.seed = random_state
    scvi.settings.dl_num_workers = 0
    genes = adata.var["highly_variable"].to_numpy()
    train = ad.AnnData(X=adata.layers["counts"][:, genes],
                       obs=pd.DataFrame({"batch": batches.to_numpy()}, index=adata.obs_names))
    scvi.model.SCVI.setup_anndata(train, batch_key="batch")
    model = scvi.model.SCVI(train, n_latent=settings.n_latent, n_hidden=settings.n_hidden,
                            n_layers=settings.n_layers,
                            gene_likelihood=settings.gene_likelihood)
    model.train(max_epochs=settings.max_epochs, batch_size=settings.batch_size,
                accelerator="cpu", devices=1, enable_progress_bar=False,
                enable_checkpointing=False)
    log.info("scVI: %d epochs on %d cells x %d genes", model.history["elbo_train"].shape[0],
             train.n_obs, train.n_vars)
    return np.ascontiguousarray(model.get_latent_representation(), dtype=np.float32)
