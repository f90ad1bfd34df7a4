"""Pseudobulk DE: pydeseq2 on raw counts summed per tissue x cell type x sample.

Samples are the replicates; samples with fewer than ``min_cells_per_sample`` cells of a
type are left out of that type's test. BH FDR is pydeseq2's own, per (contrast, cell type)
over genes.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from os import PathLike
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mscflow.contrast.design import (
    EXCLUDED_NOTE,
    ContrastDesign,
    contrast_designs,
    design_matrix,
    design_problem,
)
from mscflow.contrast.settings import Contrast, ContrastSettings
from mscflow.contrast.stats import STATUS_NO_TEST, STATUS_SKIPPED, STATUS_TESTED
from mscflow.errors import InputDataError

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["pseudobulk_counts", "pseudobulk_counts_from_files", "pseudobulk_de"]

_DE_COLUMNS = [
    "contrast", "tissue", "condition", "reference", "cell_type", "gene", "baseMean",
    "log2FoldChange", "lfcSE", "stat", "pvalue", "padj", "n_samples_condition",
    "n_samples_reference", "covariates", "status", "note",
]


def pseudobulk_counts(adata: ad.AnnData, layer: str | None = "counts"
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Summed raw counts per tissue x cell type x sample (from ``layers[layer]``, or ``X``
    with ``layer=None``).

    Returns ``(counts, groups)``: counts has one row per group (index ``tissue|cell_type|
    sample``, sorted) and one column per gene; groups has tissue, cell_type, sample, n_cells.
    """
    if layer is not None and layer not in adata.layers:
        raise InputDataError(
            f"AnnData has no layer {layer!r} with raw counts (layers: {list(adata.layers)})"
        )
    X = adata.X if layer is None else adata.layers[layer]
    summed = _sum_groups(X, adata.obs, adata.var_names, f"layer {layer!r}" if layer else "X")
    return summed, _group_table(summed.index, adata.obs)


def pseudobulk_counts_from_files(obs: pd.DataFrame, genes: pd.Index,
                                 paths: Sequence[str | PathLike]
                                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`pseudobulk_counts` of the cells in ``obs`` with the raw counts read from the
    per-sample QC files one at a time (:mod:`mscflow.inputs.sample_counts`); the same tables as
    with a counts layer, without holding every cell's counts."""
    from mscflow.inputs.sample_counts import (
        iter_sample_counts,  # parse-time check imports this module: no anndata until used
    )

    parts = [_sum_groups(block, obs.iloc[rows], genes, str(path))
             for path, (rows, block) in zip(paths, iter_sample_counts(paths, obs.index, genes),
                                            strict=True) if rows.size]
    if parts:
        summed = pd.concat(parts).groupby(level=0, sort=True).sum()
    else:
        summed = pd.DataFrame(np.zeros((0, len(genes)), np.int64), columns=genes.astype(str))
    summed.index.name = "group"
    return summed, _group_table(summed.index, obs)


def _group_keys(obs: pd.DataFrame) -> pd.Series:
    labels = obs[["tissue", "cell_type", "sample"]].astype(str)
    return labels["tissue"] + "|" + labels["cell_type"] + "|" + labels["sample"]


def _sum_groups(X, obs: pd.DataFrame, genes: pd.Index, where: str) -> pd.DataFrame:
    """Raw counts summed per tissue|cell_type|sample group (rows sorted by group)."""
    import scipy.sparse as sp

    X = sp.csr_matrix(X) if not sp.issparse(X) else X.tocsr()
    data = X.data
    if data.size and not np.all(np.equal(np.mod(data, 1), 0)):
        raise InputDataError(f"{where} holds non-integer values; pseudobulk needs raw counts")
    codes, uniques = pd.factorize(_group_keys(obs), sort=True)
    ind = sp.csr_matrix(
        (np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(len(uniques), len(codes))
    )
    summed = np.asarray((ind @ X).todense()).round().astype(np.int64)
    return pd.DataFrame(summed, index=pd.Index(uniques, name="group"),
                        columns=pd.Index(genes).astype(str))


def _group_table(groups: pd.Index, obs: pd.DataFrame) -> pd.DataFrame:
    """tissue, cell_type, sample and n_cells of each group key."""
    n_cells = _group_keys(obs).value_counts().reindex(groups).to_numpy()
    parts = pd.Series(groups).str.split("|", n=2, expand=True)
    return pd.DataFrame(
        {"tissue": parts[0].to_numpy(), "cell_type": parts[1].to_numpy(),
         "sample": parts[2].to_numpy(), "n_cells": n_cells},
        index=groups,
    )


def pseudobulk_de(
    adata: ad.AnnData,
    contrasts: Sequence[Contrast],
    settings: ContrastSettings,
    samples: pd.DataFrame | None = None,
    n_cpus: int = 1,
    layer: str = "counts",
    summed: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """pydeseq2 Wald test per contrast x cell type on summed raw counts (samples = replicates).

    Samples with fewer than ``min_cells_per_sample`` cells of the type are left out; genes
    with fewer than ``pseudobulk.min_counts`` summed counts are filtered. Cell types that
    cannot be tested give one row with ``gene`` empty and the reason in ``note``.
    ``summed``: the ``(counts, groups)`` of :func:`pseudobulk_counts_from_files` when the
    counts are read from the QC files (only ``adata.obs`` is used then); else they are
    summed from ``adata.layers[layer]``.
    """
    counts, groups = summed if summed is not None else pseudobulk_counts(adata, layer)
    frames = []
    for cd in contrast_designs(adata.obs, samples, contrasts, settings.min_samples_per_group):
        gk = groups[groups["tissue"] == cd.contrast.tissue]
        for ct in sorted(gk["cell_type"].unique()):
            if ct in settings.exclude_cell_types:
                base = {**cd.labels, "cell_type": ct, "covariates": cd.covariates}
                frames.append(_single_row(base, STATUS_SKIPPED, EXCLUDED_NOTE))
                continue
            frames.append(_de_one(cd, ct, counts, gk, settings, n_cpus))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=_DE_COLUMNS)
    out["significant"] = (out["padj"] < settings.fdr).fillna(False).astype(bool)
    cols = [c for c in out.columns if c not in ("status", "note")] + ["status", "note"]
    return out[cols]


def _de_one(
    cd: ContrastDesign, ct: str, counts: pd.DataFrame, groups: pd.DataFrame,
    settings: ContrastSettings, n_cpus: int,
) -> pd.DataFrame:
    """pydeseq2 for one contrast x cell type (or a single skipped/no-test row)."""
    k = cd.contrast
    gct = groups[groups["cell_type"] == ct].set_index("sample")
    us = cd.unit_samples(gct["n_cells"], settings.min_cells_per_sample)
    d = us.design
    n_c, n_r = us.sizes
    base = {**cd.labels, "cell_type": ct, "n_samples_condition": n_c,
            "n_samples_reference": n_r, "covariates": cd.covariates}
    mat = counts.loc[[f"{k.tissue}|{ct}|{s}" for s in d.index]] if len(d) else counts.iloc[:0]
    mat.index = d.index
    if cd.note is None and us.too_few(settings.min_samples_per_group):
        return _single_row(base, STATUS_SKIPPED,
                           us.skip_note(f"cell type {ct!r}", settings.min_samples_per_group))
    min_counts = settings.pseudobulk.min_counts
    mat = mat.loc[:, mat.sum(axis=0) >= min_counts]
    if mat.shape[1] == 0:
        return _single_row(base, STATUS_SKIPPED, f"no gene with >= {min_counts} summed counts")
    note = "; ".join(x for x in (cd.note, us.drop_note) if x)
    problem = cd.note or design_problem(design_matrix(d, k.covariates))
    if problem:
        if n_c == 0 or n_r == 0:
            return _single_row(base, STATUS_NO_TEST, note or "empty group")
        res = _naive_lfc(mat, d).assign(**base, status=STATUS_NO_TEST, note=note or problem)
        return res.reindex(columns=_DE_COLUMNS)
    res = _run_deseq(mat, d, k, n_cpus)
    return res.assign(**base, status=STATUS_TESTED, note=note).reindex(columns=_DE_COLUMNS)


def _single_row(base: dict, status: str, note: str) -> pd.DataFrame:
    return pd.DataFrame([{**base, "gene": "", "status": status, "note": note}]).reindex(
        columns=_DE_COLUMNS
    )


def _size_factors(mat: pd.DataFrame) -> np.ndarray:
    """DESeq2 median-of-ratios size factors (genes with any zero are ignored)."""
    pos = mat.loc[:, (mat > 0).all(axis=0)]
    if pos.shape[1] == 0:
        return (mat.sum(axis=1) / mat.sum(axis=1).mean()).to_numpy(float)
    logc = np.log(pos.to_numpy(float))
    return np.exp(np.median(logc - logc.mean(axis=0), axis=1))


def _naive_lfc(mat: pd.DataFrame, design: pd.DataFrame) -> pd.DataFrame:
    """log2 fold change of mean normalised counts (+0.5) when no test is possible."""
    norm = mat.div(_size_factors(mat), axis=0)
    g = (design["is_condition"] == 1).to_numpy()
    a, b = norm[g].mean(axis=0), norm[~g].mean(axis=0)
    return pd.DataFrame({"gene": mat.columns, "baseMean": norm.mean(axis=0).to_numpy(),
                         "log2FoldChange": np.log2((a + 0.5) / (b + 0.5)).to_numpy()})


def _run_deseq(mat: pd.DataFrame, d: pd.DataFrame, k: Contrast, n_cpus: int) -> pd.DataFrame:
    """Fit pydeseq2 (quiet, ``n_cpus`` workers) and return its Wald results table."""
    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.default_inference import DefaultInference
    from pydeseq2.ds import DeseqStats
    from threadpoolctl import threadpool_limits

    md = pd.DataFrame(index=mat.index.astype(str))
    md["condition"] = d["condition"].astype(str).to_numpy()
    terms = []
    for cov in k.covariates:
        col = d[cov]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            md[cov] = col.astype(float).to_numpy() - float(col.astype(float).mean())
        else:
            md[cov] = col.astype(str).to_numpy()
        if md[cov].nunique() > 1:
            terms.append(cov)
    formula = "~" + " + ".join([*terms, "condition"])
    inference = DefaultInference(n_cpus=max(1, int(n_cpus)))
    # per-gene fits are tiny: multi-threaded BLAS only adds overhead (8x slower measured)
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore")
        dds = DeseqDataSet(counts=mat.set_axis(md.index), metadata=md, design=formula,
                           refit_cooks=True, inference=inference, quiet=True)
        dds.deseq2()
        ds = DeseqStats(dds, contrast=["condition", k.condition, k.reference],
                        inference=inference, quiet=True)
        ds.summary()
    res = ds.results_df.copy()
    res.index.name = "gene"
    return res.reset_index()[["gene", "baseMean", "log2FoldChange", "lfcSE", "stat", "pvalue",
                              "padj"]]
