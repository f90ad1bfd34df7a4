"""The annotated cells laid out for viewers: ``cellxgene launch`` and others open the file
without changes.

Layout of ``results/export/annotated_cellxgene.h5ad`` (:func:`viewer_ready`):

* ``X``: log-normalised expression (``log1p`` of counts scaled to ``cluster.target_sum``),
  float32, sparse CSC (cellxgene reads genes as columns); ``raw`` is not set.
* ``layers["counts"]``: the raw counts (float32 CSC) with ``report.export_counts: true``,
  left out with ``false``.
* ``obsm``: ``X_umap`` and ``X_pca`` as finite float32 arrays (the viewers' embeddings);
  nothing else (no graphs in ``obsp``, no ``varm``).
* ``obs``: every label as a categorical of strings (no missing values: ``NA``; text with
  more than 1,000 distinct values, such as barcodes, as plain strings), scores and QC
  metrics as float32, counts as int32, flags as bool; ``var`` likewise.
* ``uns``: ``<column>_colors`` (``#rrggbb``, in category order) for the cell type,
  condition, sample, tissue and clustering columns, and ``mscflow`` (what ``X`` holds).

:func:`viewer_problems` lists what cellxgene would refuse or mishandle (its checks when it
loads an h5ad: unique names, supported column types, a finite 2-D ``X_*`` embedding, valid
colours); the export is only written when it finds none.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from mscflow.errors import InputDataError
from mscflow.inputs.sample_counts import counts_matrix
from mscflow.report.explorer import palette

__all__ = ["EMBEDDINGS", "export_stage", "viewer_problems", "viewer_ready"]

EMBEDDINGS = ("X_umap", "X_pca")
COLOURED = ("cell_type", "condition", "sample", "tissue")
MAX_CATEGORIES = 1000  # cellxgene hides categorical columns with more (max_category_items)
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")
_INT32 = np.iinfo(np.int32)


def _viewer_column(values: pd.Series) -> pd.Series:
    """One obs/var column in a type every viewer reads (see the module docstring)."""
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype) and not values.isna().any():
        return values.astype(bool)
    if isinstance(dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(dtype):
        text = values.astype("string").fillna("NA").astype(str)
        if text.nunique() > MAX_CATEGORIES:  # per-cell text (barcodes): plain strings
            return text.astype(object)
        if isinstance(dtype, pd.CategoricalDtype):
            order = [str(c) for c in dtype.categories]
            extra = sorted(set(text) - set(order))
            return pd.Categorical(text, categories=[c for c in order if c in set(text)] + extra)
        return pd.Categorical(text, categories=sorted(set(text)))
    numbers = pd.to_numeric(values, errors="coerce")
    if pd.api.types.is_integer_dtype(dtype) and not numbers.isna().any() and (
            numbers.empty or (numbers.min() >= _INT32.min and numbers.max() <= _INT32.max)):
        return numbers.astype(np.int32)
    return numbers.astype(np.float32)


def _viewer_frame(frame: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({str(c): _viewer_column(frame[c]) for c in frame.columns},
                       index=frame.index.astype(str))
    out.index.name = None
    return out


def _colours(column: pd.Series, key: str) -> list[str]:
    import matplotlib as mpl

    labels = [str(c) for c in column.cat.categories]
    return [mpl.colors.to_hex(c) for c in palette(key, labels)]


def viewer_ready(adata, *, cluster_key: str, target_sum: float, keep_counts: bool = True,
                 counts_layer: str = "counts"):
    """A new AnnData laid out as the module docstring says (the input is not changed)."""
    import anndata as ad
    import scipy.sparse as sp

    missing = [k for k in EMBEDDINGS if k not in adata.obsm]
    if missing:
        raise InputDataError(f"the annotated data lack embedding(s) {missing} in obsm; "
                             "rerun the cluster step (rule cluster)")
    obsm = {}
    for key in EMBEDDINGS:
        emb = np.asarray(adata.obsm[key], dtype=np.float32)
        if emb.ndim != 2 or emb.shape[1] < 2 or not np.all(np.isfinite(emb)):
            raise InputDataError(f"obsm['{key}'] must be a finite cells x >= 2 array "
                                 f"(shape {emb.shape}); rerun the cluster step")
        obsm[key] = np.ascontiguousarray(emb)
    x = adata.X
    x = sp.csc_matrix(x, dtype=np.float32) if sp.issparse(x) else np.asarray(x, np.float32)
    layers = {}
    if keep_counts:
        if counts_layer not in adata.layers:
            raise InputDataError(f"the annotated data have no layers['{counts_layer}'] with raw "
                                 "counts; set report.export_counts: false or rerun the workflow")
        layers["counts"] = sp.csc_matrix(adata.layers[counts_layer], dtype=np.float32)
    out = ad.AnnData(X=x, obs=_viewer_frame(adata.obs), var=_viewer_frame(adata.var),
                     obsm=obsm, layers=layers)
    uns = {"mscflow": {
        "X": f"log1p(counts / total counts per cell * {target_sum:g})",
        "counts_layer": "counts" if keep_counts else "",
        "clustering": cluster_key,
        "embeddings": list(EMBEDDINGS),
    }}
    for key in (*COLOURED, cluster_key):
        if key in out.obs and isinstance(out.obs[key].dtype, pd.CategoricalDtype):
            uns[f"{key}_colors"] = _colours(out.obs[key], key)
    out.uns = uns
    problems = viewer_problems(out)
    if problems:
        raise InputDataError("the export would not open in cellxgene: " + "; ".join(problems))
    return out


def _column_problem(where: str, name: str, values: pd.Series) -> str | None:
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        if not all(isinstance(c, str) for c in dtype.categories):
            return f"{where} column '{name}': categories must be strings"
        if values.isna().any():
            return f"{where} column '{name}': missing values in a categorical"
        if len(dtype.categories) > MAX_CATEGORIES:
            return f"{where} column '{name}': {len(dtype.categories)} categories (cellxgene " \
                   f"hides columns with more than {MAX_CATEGORIES})"
        return None
    if dtype == np.bool_:
        return None
    if dtype.kind == "O":
        if values.isna().any() or not values.map(lambda v: isinstance(v, str)).all():
            return f"{where} column '{name}': object column with non-strings or missing values"
        return None
    if dtype.kind in "iu":
        if len(values) and (values.min() < _INT32.min or values.max() > _INT32.max):
            return f"{where} column '{name}': integers outside the int32 range"
        return None
    if dtype.kind == "f":
        return None
    return f"{where} column '{name}': type {dtype} is not supported by cellxgene"


def viewer_problems(adata, embeddings: Sequence[str] = EMBEDDINGS) -> list[str]:
    """What cellxgene (``cellxgene launch``) would refuse or mishandle in ``adata``."""
    import scipy.sparse as sp

    problems = []
    for where, frame in (("obs", adata.obs), ("var", adata.var)):
        if not frame.index.is_unique:
            problems.append(f"{where} names are not unique")
        if not frame.columns.is_unique:
            problems.append(f"{where} column names are not unique")
        for name in frame.columns:
            if not isinstance(name, str):
                problems.append(f"{where} column name {name!r} is not a string")
                continue
            problem = _column_problem(where, name, frame[name])
            if problem:
                problems.append(problem)
    valid = []
    for key in adata.obsm:
        arr = adata.obsm[key]
        if not str(key).startswith("X_"):
            continue
        if (isinstance(arr, np.ndarray) and arr.dtype.kind in "fiu" and arr.ndim == 2
                and arr.shape[0] == adata.n_obs and arr.shape[1] >= 2
                and np.all(np.isfinite(arr))):
            valid.append(key)
        else:
            problems.append(f"obsm['{key}'] is not a finite cells x >= 2 numeric array")
    for key in embeddings:
        if key not in valid:
            problems.append(f"embedding obsm['{key}'] missing or invalid")
    x = adata.X
    if x is None or x.dtype != np.float32:
        problems.append(f"X must be float32 (is {None if x is None else x.dtype})")
    elif sp.issparse(x) and x.format != "csc":
        problems.append("sparse X should be CSC (cellxgene reads genes as columns)")
    for key, colours in adata.uns.items():
        if not str(key).endswith("_colors"):
            continue
        column = key[: -len("_colors")]
        if column not in adata.obs:
            continue
        values = adata.obs[column]
        if not isinstance(values.dtype, pd.CategoricalDtype):
            problems.append(f"uns['{key}'] colours a column that is not categorical")
        elif len(colours) < len(values.cat.categories):
            problems.append(f"uns['{key}'] has fewer colours than categories")
        bad = [c for c in colours if not (isinstance(c, str) and _HEX.match(c))]
        if bad:
            problems.append(f"uns['{key}'] has colours that are not #rrggbb: {bad[:3]}")
    return problems


def export_stage(h5ad: str, *, counts: Sequence[str] | None, cluster_key: str,
                 target_sum: float):
    """Rule export_cellxgene: read the annotated cells, return the viewer-ready AnnData;
    with ``counts`` (the per-sample QC files) its counts layer is read from them."""
    import anndata as ad

    adata = ad.read_h5ad(h5ad)
    if counts is not None:
        adata.layers["counts"] = counts_matrix(counts, adata.obs_names, adata.var_names)
    return viewer_ready(adata, cluster_key=cluster_key, target_sum=target_sum,
                        keep_counts=counts is not None)
