"""Per-sample quality control: metrics, adaptive outlier flags, doublets, filtering."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
from scipy import sparse
from scipy.stats import median_abs_deviation

from mscflow.config import Settings, settings_section
from mscflow.errors import InputDataError
from mscflow.inputs.readers import (
    add_published_columns,
    check_species,
    prefix_barcodes,
    read_sample,
)
from mscflow.job import timed
from mscflow.qc.doublet_classifier import DoubletClassifierSettings, classify_doublets, embed_cells
from mscflow.qc.doublet_consensus import RateDecision, consensus_doublets
from mscflow.qc.doublets import (
    DoubletResult,
    expected_doublet_rate,
    nearest_singlets,
    scrublet_fast,
)

log = logging.getLogger(__name__)

# Gene-name patterns per species for the QC gene families.
GENE_PATTERNS: dict[str, dict[str, str]] = {
    "mouse": {"mt": r"^mt-", "ribo": r"^Rp[sl]\d", "hb": r"^Hb[ab]-"},
    "human": {"mt": r"^MT-", "ribo": r"^RP[SL]\d", "hb": r"^HB[ABDEGMQZ]\d*$"},
}

FLAG_COLUMNS = (
    "qc_low_counts", "qc_high_counts", "qc_low_genes", "qc_high_genes",
    "qc_high_mito", "qc_dominant_feature",
)  # fmt: skip


@settings_section("qc", doublet_classifier=DoubletClassifierSettings)
class QCSettings(Settings):
    """Config section ``qc``: outlier rules, doublets and the too-few-cells policy (fields:
    the section's keys in the schema; config/README.md says what each means)."""


def add_qc_metrics(adata: ad.AnnData, species: str) -> None:
    """Add scanpy QC metrics for mitochondrial, ribosomal and haemoglobin genes (in place).

    Also adds ``top_feature_fraction``: the share of a cell's counts in its largest gene
    (catches transgene- or ambient-dominated barcodes).
    """
    if species not in GENE_PATTERNS:
        raise ValueError(f"species '{species}' not supported; use one of {list(GENE_PATTERNS)}")
    names = adata.var_names.to_series()
    for family, pattern in GENE_PATTERNS[species].items():
        adata.var[family] = names.str.contains(pattern, regex=True).to_numpy()
    sc.pp.calculate_qc_metrics(adata, qc_vars=list(GENE_PATTERNS[species]), percent_top=None,
                               log1p=True, inplace=True)
    top = np.asarray(adata.X.max(axis=1).todense()).ravel()
    total = adata.obs["total_counts"].to_numpy()
    adata.obs["top_feature_fraction"] = np.divide(top, total, out=np.zeros_like(top),
                                                  where=total > 0)
    adata.obs["top_feature"] = adata.var_names[
        np.asarray(adata.X.argmax(axis=1)).ravel()
    ].to_numpy()


def mad_bounds(values: np.ndarray, nmads: float) -> tuple[float, float]:
    """Median -/+ nmads unscaled median absolute deviations."""
    med = float(np.median(values))
    mad = float(median_abs_deviation(values))
    return med - nmads * mad, med + nmads * mad


def flag_outliers(adata: ad.AnnData, settings: QCSettings) -> dict[str, float]:
    """Flag low-quality cells by MADs per sample plus hard floors (in place).

    Returns the thresholds actually applied, on the natural scale.
    """
    obs = adata.obs
    lo_c, hi_c = mad_bounds(obs["log1p_total_counts"].to_numpy(), settings.nmads_counts)
    lo_g, hi_g = mad_bounds(obs["log1p_n_genes_by_counts"].to_numpy(), settings.nmads_genes)
    _, hi_m = mad_bounds(obs["pct_counts_mt"].to_numpy(), settings.nmads_mito)
    applied = {
        "min_counts": max(float(np.expm1(lo_c)), float(settings.min_counts)),
        "max_counts": float(np.expm1(hi_c)),
        "min_genes": max(float(np.expm1(lo_g)), float(settings.min_genes)),
        "max_genes": float(np.expm1(hi_g)),
        "max_pct_mito": min(max(hi_m, float(settings.pct_mito_floor)),
                            float(settings.max_pct_mito)),
        "max_top_feature_fraction": float(settings.max_top_feature_fraction),
    }
    obs["qc_low_counts"] = obs["total_counts"] < applied["min_counts"]
    obs["qc_high_counts"] = obs["total_counts"] > applied["max_counts"]
    obs["qc_low_genes"] = obs["n_genes_by_counts"] < applied["min_genes"]
    obs["qc_high_genes"] = obs["n_genes_by_counts"] > applied["max_genes"]
    obs["qc_high_mito"] = obs["pct_counts_mt"] > applied["max_pct_mito"]
    obs["qc_dominant_feature"] = obs["top_feature_fraction"] > applied["max_top_feature_fraction"]
    obs["qc_fail"] = obs[list(FLAG_COLUMNS)].any(axis=1)
    return applied


DOUBLET_METHODS = ("consensus", "classifier", "scrublet", "scanpy")


def run_doublet_method(counts, method: str, *, expected_rate: float,
                       classifier: DoubletClassifierSettings, random_state: int,
                       configured: bool = False, max_ratio: float = 3.0
                       ) -> tuple[DoubletResult, RateDecision]:
    """Scores and calls of one sample's cells (raw counts, cells x genes) by ``method``, and
    how the rate called came about.

    ``consensus`` (:func:`mscflow.qc.doublet_consensus.consensus_doublets`: rank vote of the
    fast scrublet and the classifier, the rate its scores show within ``max_ratio`` of
    ``expected_rate``, or ``expected_rate`` itself when ``configured``), ``classifier``
    (:func:`mscflow.qc.doublet_classifier.classify_doublets`), ``scrublet``
    (:func:`mscflow.qc.doublets.scrublet_fast`) or ``scanpy`` (``sc.pp.scrublet``); the
    scrublets call with their automatic threshold, ``expected_rate`` is their prior."""
    if method not in DOUBLET_METHODS:
        raise ValueError(f"qc.doublet_method must be one of {', '.join(DOUBLET_METHODS)}, "
                         f"not '{method}'")
    if method == "consensus":
        return consensus_doublets(counts, expected_rate=expected_rate, configured=configured,
                                  classifier=classifier, max_ratio=max_ratio,
                                  random_state=random_state)
    if method == "classifier":
        result = classify_doublets(counts, expected_rate=expected_rate, params=classifier,
                                   random_state=random_state)
        reason = (f"classifier: the rate its scores show, within "
                  f"{classifier.max_rate_ratio:g}x of the prior")
    elif method == "scrublet":
        result = scrublet_fast(counts, expected_rate=expected_rate, random_state=random_state)
        reason = "scrublet's automatic threshold (the prior scales the scores only)"
    else:
        sub = ad.AnnData(counts)
        sc.pp.scrublet(sub, expected_doublet_rate=expected_rate, random_state=random_state,
                       verbose=False)
        result = DoubletResult(sub.obs["doublet_score"].to_numpy(float),
                               sub.obs["predicted_doublet"].to_numpy(bool),
                               float(sub.uns["scrublet"]["threshold"]),
                               np.asarray(sub.uns["scrublet"]["doublet_scores_sim"]),
                               expected_rate)
        reason = "scanpy scrublet's automatic threshold (the prior scales the scores only)"
    if method != "classifier" and not np.isfinite(result.threshold):
        reason = "scores not bimodal: no automatic threshold, none called"
    scored = np.isfinite(result.scores)
    called = float(result.predicted[scored].mean()) if scored.any() else float("nan")
    return result, RateDecision(expected_rate, float("nan"), called, reason)


def score_doublets(adata: ad.AnnData, settings: QCSettings, *, random_state: int,
                   min_cells: int = 100) -> None:
    """Doublet scores and calls on the cells that passed QC (in place).

    The expected rate (the prior) is ``qc.expected_doublet_rate`` or, unset, 0.8 % per 1,000
    cells of the sample (:func:`mscflow.qc.doublets.expected_doublet_rate`); how many cells
    are called depends on the method (:func:`run_doublet_method`). Adds obs
    ``doublet_score``, ``predicted_doublet`` and ``doublet_neighbour`` (for a called
    doublet: the nearest cell not called, in the method's embedding; it places the doublet
    on a cluster later) and ``uns["doublets"]`` (method, expected rate, threshold, the rate
    the scores showed and why the called rate differs from the prior). Cells
    failing QC, and samples with fewer than ``min_cells`` passing cells, get NaN / False.
    """
    obs = adata.obs
    obs["doublet_score"] = np.nan
    obs["predicted_doublet"] = False
    obs["doublet_neighbour"] = ""
    rate = expected_doublet_rate(settings.expected_doublet_rate, adata.n_obs)
    adata.uns["doublets"] = {"method": settings.doublet_method, "expected_rate": rate,
                             "threshold": float("nan"), "n_scored": 0,
                             "rate_from_scores": float("nan"),
                             "rate_reason": "not scored: too few cells pass QC"}
    keep = ~obs["qc_fail"].to_numpy()
    if keep.sum() < min_cells:
        log.warning("only %d cells pass QC: doublet detection skipped", keep.sum())
        return
    counts = adata.X[keep]
    result, decision = run_doublet_method(
        counts, settings.doublet_method, expected_rate=rate,
        classifier=settings.doublet_classifier, random_state=random_state,
        configured=settings.expected_doublet_rate is not None,
        max_ratio=settings.doublet_rate_max_ratio)
    obs.loc[keep, "doublet_score"] = result.scores
    obs.loc[keep, "predicted_doublet"] = result.predicted
    embedding = result.embedding
    if embedding is None:
        embedding = embed_cells(sparse.csr_matrix(counts, dtype=np.float32),
                                settings.doublet_classifier.n_features,
                                settings.doublet_classifier.n_pcs).coordinates
    nearest = nearest_singlets(embedding, result.predicted)
    names = adata.obs_names[keep]
    obs.loc[names[nearest >= 0], "doublet_neighbour"] = names[nearest[nearest >= 0]]
    source = ("configured" if settings.expected_doublet_rate is not None
              else f"10x rule, {adata.n_obs} cells")
    adata.uns["doublets"].update(
        threshold=float(result.threshold), n_scored=int(keep.sum()),
        rate_from_scores=decision.from_scores,
        rate_reason=f"prior {rate:.2%} ({source}); {decision.reason}")
    log.info("doublets (%s): %d of %d cells called, %.1f expected (rate %.4f)",
             settings.doublet_method, int(result.predicted.sum()), int(keep.sum()),
             rate * keep.sum(), rate)


def summarise_sample(adata: ad.AnnData, sample: str, applied: Mapping[str, float]) -> pd.DataFrame:
    """One-row table: cells in/out, cells per failure reason, thresholds applied."""
    obs = adata.obs
    row: dict[str, object] = {"sample": sample, "cells_in": adata.n_obs}
    for flag in FLAG_COLUMNS:
        row[f"n_{flag}"] = int(obs[flag].sum())
    row["n_qc_fail"] = int(obs["qc_fail"].sum())
    row["n_doublet"] = int(obs["predicted_doublet"].sum())
    row["cells_out"] = int((~obs["qc_fail"] & ~obs["predicted_doublet"]).sum())
    row.update({f"threshold_{k}": v for k, v in applied.items()})
    row["threshold_doublet_score"] = adata.uns["doublets"]["threshold"]
    row["doublet_method"] = adata.uns["doublets"]["method"]
    row["expected_doublet_rate"] = adata.uns["doublets"]["expected_rate"]
    scored = adata.uns["doublets"]["n_scored"]
    row["n_doublet_expected"] = round(adata.uns["doublets"]["expected_rate"] * scored, 1)
    row["called_doublet_rate"] = row["n_doublet"] / scored if scored else np.nan
    row["doublet_rate_from_scores"] = adata.uns["doublets"]["rate_from_scores"]
    row["doublet_rate_reason"] = adata.uns["doublets"]["rate_reason"]
    return pd.DataFrame([row])


def run_sample_qc(adata: ad.AnnData, *, sample: str, species: str, settings: QCSettings,
                  random_state: int) -> tuple[ad.AnnData, pd.DataFrame, pd.DataFrame]:
    """Metrics, flags and doublets for one sample.

    Returns the filtered AnnData (raw counts in X), the per-cell metrics table of all
    cells, and the one-row summary.
    """
    with timed("QC metrics + flags"):
        add_qc_metrics(adata, species)
        applied = flag_outliers(adata, settings)
    with timed("doublets"):
        score_doublets(adata, settings, random_state=random_state)
    summary = summarise_sample(adata, sample, applied)
    keep = ~adata.obs["qc_fail"].to_numpy() & ~adata.obs["predicted_doublet"].to_numpy()
    metric_cols = [
        "barcode", "total_counts", "n_genes_by_counts", "pct_counts_mt", "pct_counts_ribo",
        "pct_counts_hb", "top_feature_fraction", "top_feature", *FLAG_COLUMNS, "qc_fail",
        "doublet_score", "predicted_doublet", "doublet_neighbour",
    ]  # fmt: skip
    metrics = adata.obs[metric_cols].copy()
    metrics.insert(0, "sample", sample)
    metrics["kept"] = keep
    filtered = adata[keep].copy()
    return filtered, metrics.reset_index(names="cell"), summary


def too_few_cells_message(summary: pd.DataFrame, minimum: int) -> str | None:
    """Message naming the sample and per-reason counts when too few cells survive QC."""
    row = summary.iloc[0]
    if row["cells_out"] >= minimum:
        return None
    reasons = ", ".join(f"{f.removeprefix('qc_')}: {int(row[f'n_{f}'])}" for f in FLAG_COLUMNS)
    return (
        f"sample '{row['sample']}': only {int(row['cells_out'])} of {int(row['cells_in'])} "
        f"cells pass QC (minimum qc.min_cells_per_sample = {minimum}); removed per reason: "
        f"{reasons}, doublet: {int(row['n_doublet'])}. Relax the qc thresholds in "
        "config.yaml, or set qc.on_too_few_cells: drop to continue without this sample."
    )


class TooFewCellsError(InputDataError):
    """Too few cells of a sample pass QC (``qc.on_too_few_cells: stop``)."""


def apply_min_cells_policy(filtered: ad.AnnData, summary: pd.DataFrame,
                           settings: QCSettings) -> ad.AnnData:
    """Stop (raise :class:`TooFewCellsError`) or drop a sample with fewer than
    ``qc.min_cells_per_sample`` cells after QC, as ``qc.on_too_few_cells`` says.

    Adds the ``dropped`` column to ``summary``; a dropped sample keeps no cells.
    """
    message = too_few_cells_message(summary, settings.min_cells_per_sample)
    summary["dropped"] = bool(message)
    if not message:
        return filtered
    if settings.on_too_few_cells == "stop":
        raise TooFewCellsError(message)
    log.warning("%s -- dropping the sample (qc.on_too_few_cells: drop)", message)
    return filtered[:0].copy()


def qc_sample(path: str | Path, fmt: str, *, sample: str, metadata: Mapping[str, str],
              settings: QCSettings, random_state: int, layer: str | None = None,
              obs_filter: str = "", var_symbols: str = "", keep_obs: str = "",
              run_keep_obs: str = "") -> tuple[ad.AnnData, pd.DataFrame, pd.DataFrame]:
    """The QC stage of one sample: read, check the species, compute metrics, flag
    outliers and doublets, filter, and apply the too-few-cells policy.

    ``metadata`` (the sheet's columns for the sample, with ``species``) is copied into obs
    and barcodes become ``<sample>:<barcode>``. ``layer``, ``obs_filter``, ``var_symbols``
    and ``keep_obs`` (the sheet's reading columns) go to
    :func:`mscflow.inputs.readers.read_sample`; ``run_keep_obs`` (every row's ``keep_obs``) are
    added empty where this file lacks them, so the merged samples keep them. Returns
    (filtered cells, per-cell metrics of every cell, one-row summary). Bad input raises
    :class:`~mscflow.errors.InputDataError`.
    """
    with timed("read"):
        adata = read_sample(path, fmt, sample=sample, layer=layer or None,
                            obs_filter=obs_filter, var_symbols=var_symbols, keep_obs=keep_obs)
    add_published_columns(adata, run_keep_obs)
    check_species(adata, metadata["species"], sample=sample, source=str(path))
    log.info("read %s: %d cells x %d genes", sample, adata.n_obs, adata.n_vars)
    prefix_barcodes(adata, sample)
    for key, value in metadata.items():
        adata.obs[key] = value
    filtered, metrics, summary = run_sample_qc(adata, sample=sample,
                                               species=metadata["species"],
                                               settings=settings, random_state=random_state)
    filtered = apply_min_cells_policy(filtered, summary, settings)
    log.info("kept %d of %d cells", filtered.n_obs, adata.n_obs)
    return filtered, metrics, summary
