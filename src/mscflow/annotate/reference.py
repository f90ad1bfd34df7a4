"""Reference-model annotation with celltypist (``annotation.source: reference``).

A celltypist model is either given (``annotation.reference_model``, a ``.pkl`` file) or
trained here from a labelled reference h5ad (``annotation.reference_h5ad``, labels in
``annotation.reference_label_column``): celltypist's logistic regression on
log-normalised expression (total 10,000 per cell, log1p), fitted by stochastic
gradient descent with the run's seed. The run's cells are predicted
with majority voting over the run's clusters (celltypist's ``over_clustering``), and the
per-cell probability of the predicted label is kept.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

from mscflow.annotate.published import map_published_labels
from mscflow.errors import InputDataError

if TYPE_CHECKING:  # celltypist is imported where it is used: its import takes ~2 s
    from celltypist.models import Model

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ["cell_type_reference_cell", "cell_type_reference",
                      "cell_type_reference_probability"]
_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d")
TARGET_SUM = 1e4


def _is_counts(x) -> bool:
    values = x.data if sp.issparse(x) else np.asarray(x).ravel()
    values = values[: 1_000_000]
    return bool(values.size) and bool(np.all(values >= 0)) and bool(
        np.allclose(values, np.round(values)))


def reference_expression(adata: AnnData, what: str) -> AnnData:
    """Log-normalised expression (10,000 per cell, log1p) with gene symbols as var names:
    from ``raw`` (the CELLxGENE layout keeps counts there), else ``X``; counts are
    normalised here. Ensembl ids are replaced by ``var["feature_name"]`` when there is
    one. ``what`` names the data in errors."""
    source = adata.raw.to_adata() if adata.raw is not None else adata.copy()
    source.obs = adata.obs.copy()
    if "feature_name" in adata.var and np.mean(
            [bool(_ENSEMBL.match(str(v))) for v in source.var_names[:1000]]) > 0.5:
        source.var_names = adata.var["feature_name"].reindex(source.var_names).astype(str)
        source.var_names_make_unique()
    if _is_counts(source.X):
        source.X = source.X.astype(np.float32)
        sc.pp.normalize_total(source, target_sum=TARGET_SUM)
        sc.pp.log1p(source)
        return source
    totals = np.asarray(np.expm1(source.X[:200]).sum(axis=1)).ravel()
    if not np.allclose(totals, TARGET_SUM, rtol=0.01):
        raise InputDataError(
            f"{what}: X is neither counts nor log-normalised to {TARGET_SUM:g} per cell "
            f"(first cells sum to {totals[:3].round(0).tolist()} after expm1); celltypist "
            "needs one of the two: give counts in X or raw, or normalise with "
            "scanpy.pp.normalize_total(target_sum=1e4) then log1p")
    return source


def train_reference_model(reference: AnnData, label_column: str, *, seed: int,
                          top_genes: int = 300, what: str = "the reference",
                          n_jobs: int = 1) -> Model:
    """A celltypist model trained on ``reference`` (labels in obs ``label_column``; cells
    without a label left out): celltypist's feature selection (the ``top_genes`` genes of
    each label's first fit) and a class-balanced refit. Raises :class:`InputDataError`
    naming ``what`` for a missing column or fewer than two labels."""
    if label_column not in reference.obs:
        raise InputDataError(f"{what}: no obs column {label_column!r} "
                             f"(annotation.reference_label_column); it has "
                             f"{', '.join(map(str, reference.obs.columns[:20]))}")
    data = reference_expression(reference, what)
    labels = reference.obs[label_column]
    keep = labels.notna().to_numpy() & (labels.astype(str).str.strip() != "").to_numpy()
    data = data[keep].copy()
    labels = labels[keep].astype(str)
    if labels.nunique() < 2:
        raise InputDataError(f"{what}: {label_column!r} holds {labels.nunique()} label(s); "
                             "a reference model needs at least two")
    log.info("training a celltypist model on %d cells, %d genes, %d labels (%s)",
             data.n_obs, data.n_vars, labels.nunique(),
             ", ".join(f"{k}: {v}" for k, v in labels.value_counts().items()))
    np.random.seed(seed)  # celltypist's sampling steps draw from numpy's global state
    # celltypist's stochastic-gradient logistic regression (one-vs-rest; its default
    # solver passes LogisticRegression's multi_class, which scikit-learn >= 1.8 no longer
    # takes). Classes weighted by their inverse size: references are unbalanced, and
    # unweighted fits pull small populations into the largest one
    import celltypist

    return celltypist.train(data, labels=labels.to_numpy(), genes=data.var_names,
                            check_expression=True, use_SGD=True, feature_selection=True,
                            top_genes=top_genes, n_jobs=n_jobs, random_state=seed,
                            class_weight="balanced")


def load_model(path: str | Path) -> Model:
    """A celltypist model file; an error naming the file when it is missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"annotation.reference_model: no file {path}")
    from celltypist.models import Model

    try:
        return Model.load(str(path.resolve()))
    except Exception as error:  # celltypist re-raises pickle errors as bare Exceptions
        raise InputDataError(f"annotation.reference_model: {path} is not a celltypist model "
                             f"({error})") from error


def predict_reference(adata: AnnData, model: Model, clusters: pd.Series, *,
                      majority_voting: bool = True) -> pd.DataFrame:
    """celltypist predictions for ``adata`` (log-normalised ``X``, symbols as var names):
    per cell the predicted label (``cell_type_reference_cell``), the cluster's majority
    label (``cell_type_reference``; the cell's own when ``majority_voting`` is False) and
    the probability of the cell's predicted label. Logs the model genes the data lack."""
    shared = np.isin(model.features, adata.var_names)
    if not shared.any():
        raise InputDataError("annotation: the reference model shares no gene with the data "
                             f"(model genes e.g. {', '.join(model.features[:5])}; data genes "
                             f"e.g. {', '.join(adata.var_names[:5])}): use a model of the "
                             "same species and gene naming")
    log.info("reference model: %d of its %d genes in the data", int(shared.sum()),
             len(model.features))
    import celltypist

    result = celltypist.annotate(adata, model=model, majority_voting=majority_voting,
                                 over_clustering=clusters.loc[adata.obs_names].astype(str)
                                 .to_numpy() if majority_voting else None)
    labels = result.predicted_labels
    own = labels["predicted_labels"].astype(str)
    matrix = result.probability_matrix.loc[labels.index]
    probability = matrix.to_numpy()[np.arange(len(own)), matrix.columns.get_indexer(own)]
    voted = labels["majority_voting"].astype(str) if majority_voting else own
    return pd.DataFrame({PREDICTION_COLUMNS[0]: own.to_numpy(),
                         PREDICTION_COLUMNS[1]: voted.to_numpy(),
                         PREDICTION_COLUMNS[2]: probability}, index=adata.obs_names)


def map_reference_labels(predictions: pd.DataFrame, names: Mapping[str, str]) -> pd.DataFrame:
    """The predicted labels (the reference's own names, often CELLxGENE's) in mscflow's
    names, by the published-name table (:func:`mscflow.annotate.published.read_name_table`);
    names not in it stay as written."""
    out = predictions.copy()
    for column in PREDICTION_COLUMNS[:2]:
        out[column] = map_published_labels(out[column], names).to_numpy()
    return out


def read_reference(path: str | Path) -> AnnData:
    """The labelled reference h5ad; an error naming the file when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"annotation.reference_h5ad: no file {path}")
    return ad.read_h5ad(path)
