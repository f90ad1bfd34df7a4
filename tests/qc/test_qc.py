"""mscflow.qc.core on its own: metrics, MAD thresholds, flags and the too-few-cells policy,
on the real Tabula Muris lung channel (tests/data) and on hand-made matrices."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from helpers import TABULA_MURIS

from mscflow.qc.core import (
    FLAG_COLUMNS,
    QCSettings,
    TooFewCellsError,
    add_qc_metrics,
    apply_min_cells_policy,
    flag_outliers,
    mad_bounds,
    qc_sample,
)


def test_mad_bounds_are_median_plus_minus_unscaled_mads() -> None:
    values = np.array([1.0, 2.0, 3.0, 4.0, 100.0])  # median 3, MAD 1
    assert mad_bounds(values, 2) == (1.0, 5.0)


def test_metrics_count_mitochondrial_share_and_the_dominant_gene() -> None:
    counts = sp.csr_matrix(np.array([[5, 5, 0, 0], [0, 1, 9, 0], [2, 2, 2, 2]], np.float32))
    adata = ad.AnnData(counts, var=pd.DataFrame(index=["mt-Co1", "Actb", "Gfp", "Rps3"]))
    adata.obs_names = ["a", "b", "c"]
    add_qc_metrics(adata, "mouse")
    assert adata.obs["pct_counts_mt"].tolist() == pytest.approx([50.0, 0.0, 25.0])
    assert adata.obs["top_feature"].tolist()[1] == "Gfp"
    assert adata.obs["top_feature_fraction"].tolist()[1] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="species 'zebrafish' not supported"):
        add_qc_metrics(adata.copy(), "zebrafish")


def test_flags_follow_the_applied_thresholds() -> None:
    rng = np.random.default_rng(0)
    counts = sp.csr_matrix(rng.poisson(2.0, size=(300, 400)).astype(np.float32))
    counts[0] = 0
    counts[0, :3] = 1  # a near-empty barcode
    adata = ad.AnnData(counts, var=pd.DataFrame(index=[f"g{i}" for i in range(400)]))
    add_qc_metrics(adata, "mouse")
    applied = flag_outliers(adata, QCSettings.from_config({}))
    obs = adata.obs
    assert obs["qc_low_counts"].iloc[0] and obs["qc_fail"].iloc[0]
    assert (obs["qc_low_counts"] == (obs["total_counts"] < applied["min_counts"])).all()
    assert (obs["qc_fail"] == obs[list(FLAG_COLUMNS)].any(axis=1)).all()
    assert obs["qc_fail"].mean() < 0.05


def test_qc_sample_reads_the_real_channel_and_keeps_most_cells() -> None:
    settings = QCSettings.from_config({"doublet_method": "scrublet"})
    filtered, metrics, summary = qc_sample(
        TABULA_MURIS, "10x_mtx", sample="P7_8", random_state=0, settings=settings,
        metadata={"species": "mouse", "tissue": "lung", "condition": "control"})
    row = summary.iloc[0]
    assert row["cells_in"] == len(metrics) and row["cells_out"] == filtered.n_obs
    assert 0.7 * row["cells_in"] < row["cells_out"] < row["cells_in"]
    assert filtered.obs_names[0].startswith("P7_8:")
    assert set(filtered.obs["tissue"]) == {"lung"}
    assert float(filtered.X.max()) > 1 and np.allclose(filtered.X.data, np.round(filtered.X.data))


def test_too_few_cells_stop_names_the_sample_and_drop_empties_it() -> None:
    adata = ad.AnnData(sp.csr_matrix(np.ones((3, 2), np.float32)))
    summary = pd.DataFrame([{"sample": "s1", "cells_in": 10, "cells_out": 3, "n_doublet": 1,
                             **{f"n_{f}": 1 for f in FLAG_COLUMNS}}])
    stop = QCSettings.from_config({"min_cells_per_sample": 5})
    with pytest.raises(TooFewCellsError, match="sample 's1': only 3 of 10 cells pass QC"):
        apply_min_cells_policy(adata, summary.copy(), stop)
    drop = QCSettings.from_config({"min_cells_per_sample": 5, "on_too_few_cells": "drop"})
    kept = apply_min_cells_policy(adata, summary, drop)
    assert kept.n_obs == 0 and bool(summary["dropped"].iloc[0])
