"""Consensus doublet calls (issue 35): the rank vote, the rate decision, calls that follow
the planted rate rather than the prior, and the QC summary saying why."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from helpers import TABULA_MURIS

from mscflow.inputs.readers import prefix_barcodes, read_sample
from mscflow.qc.core import QCSettings, add_qc_metrics, flag_outliers, run_sample_qc
from mscflow.qc.doublet_classifier import DoubletClassifierSettings, classify_doublets
from mscflow.qc.doublet_consensus import (
    call_top,
    combine_detectors,
    consensus_doublets,
    consensus_scores,
    decide_rate,
    rate_from_scores,
)
from mscflow.qc.doublet_simulation import real_templates, simulate_sample
from mscflow.qc.doublets import scrublet_fast

CLASSIFIER = DoubletClassifierSettings.from_config({})


def test_consensus_is_the_mean_rank_and_calls_the_top_share() -> None:
    first = np.array([0.1, 0.9, 0.5, np.nan, 0.3])
    second = np.array([10.0, 30.0, 40.0, 20.0, np.nan])  # another scale, same weight
    scores = consensus_scores([first, second])
    # ranks among the scored: first (1/4, 4/4, 3/4, -, 2/4), second (1/4, 3/4, 4/4, 2/4, -)
    np.testing.assert_allclose(scores, [0.25, 0.875, 0.875, 0.5, 0.5])
    called, cut = call_top(np.array([0.2, np.nan, 0.9, 0.5, 0.7]), rate=0.5)
    np.testing.assert_array_equal(called, [False, False, True, False, True])
    assert cut == 0.7
    none, cut = call_top(np.array([0.2, 0.3]), rate=0.1)
    assert not none.any() and cut == np.inf


def test_rate_from_scores_counts_real_cells_scoring_like_artificial_doublets() -> None:
    rng = np.random.default_rng(0)
    artificial = rng.beta(8, 1, 2000)
    real = np.r_[rng.beta(1, 8, 9000), rng.beta(8, 1, 1000), np.nan]  # 10 % look artificial
    assert rate_from_scores(real, artificial) == pytest.approx(0.10, abs=0.01)
    assert np.isnan(rate_from_scores(np.array([np.nan]), artificial))


def test_rate_decision_keeps_the_estimate_near_the_prior_and_says_why() -> None:
    within = decide_rate(0.04, 0.06, configured=False, max_ratio=3.0)
    assert within.called == 0.06 and "more doublets than the prior" in within.reason
    fewer = decide_rate(0.04, 0.02, configured=False, max_ratio=3.0)
    assert fewer.called == 0.02 and "fewer" in fewer.reason
    capped = decide_rate(0.04, 0.30, configured=False, max_ratio=3.0)
    assert capped.called == pytest.approx(0.12) and "capped at 3x" in capped.reason
    floored = decide_rate(0.04, 0.001, configured=False, max_ratio=2.0)
    assert floored.called == pytest.approx(0.02) and "floored" in floored.reason
    assert decide_rate(0.04, np.nan, configured=False, max_ratio=3.0).called == 0.04
    configured = decide_rate(0.05, 0.20, configured=True, max_ratio=3.0)
    assert configured.called == 0.05 and "qc.expected_doublet_rate" in configured.reason


@pytest.fixture(scope="module")
def tabula_muris() -> sc.AnnData:
    """The real lung channel, barcodes prefixed, QC metrics and outlier flags added."""
    adata = read_sample(TABULA_MURIS, "10x_mtx", sample="tm")
    prefix_barcodes(adata, "tm")
    add_qc_metrics(adata, "mouse")
    flag_outliers(adata, QCSettings.from_config({}))
    return adata


@pytest.fixture(scope="module")
def loaded_samples(tabula_muris) -> dict[float, tuple[sc.AnnData, pd.DataFrame]]:
    """1,000 cells on the channel's real profiles with 2 % and with 10 % doublets (mixed
    kinds, library gain 1.5): a lightly and a heavily loaded channel."""
    templates = real_templates(tabula_muris[~tabula_muris.obs["qc_fail"].to_numpy()].copy())
    return {rate: simulate_sample(templates, n_cells=1000, doublet_rate=rate, gain=1.5,
                                  kind="mixed", seed=7) for rate in (0.02, 0.10)}


def test_calls_follow_the_load_not_the_prior_unless_configured(loaded_samples) -> None:
    """The same 5 % prior for both: the 10 % sample gets more calls than the prior, the 2 %
    one fewer; a configured rate is called as it is."""
    called = {}
    for planted, (adata, truth) in loaded_samples.items():
        scrub = scrublet_fast(adata.X, expected_rate=0.05)
        clf = classify_doublets(adata.X, expected_rate=0.05, params=CLASSIFIER)
        result, decision = combine_detectors(scrub, clf, expected_rate=0.05, configured=False,
                                             max_ratio=3.0)
        called[planted] = result.predicted.mean()
        assert decision.called == pytest.approx(called[planted], abs=1 / adata.n_obs)
        hits = (result.predicted & truth["doublet"].to_numpy()).sum()
        assert hits / max(result.predicted.sum(), 1) >= 0.3  # chance: the planted rate
        fixed, decision = combine_detectors(scrub, clf, expected_rate=0.05, configured=True,
                                            max_ratio=3.0)
        assert fixed.predicted.sum() == round(0.05 * adata.n_obs)
        assert "configured" in decision.reason
    assert called[0.10] > 0.05 > called[0.02], called


def test_consensus_doublets_runs_both_detectors_with_the_seed(loaded_samples) -> None:
    adata = loaded_samples[0.10][0][:400].copy()
    first, _ = consensus_doublets(adata.X, expected_rate=0.05, configured=False,
                                  classifier=CLASSIFIER, max_ratio=3.0, random_state=3)
    scrub = scrublet_fast(adata.X, expected_rate=0.05, random_state=3)
    clf = classify_doublets(adata.X, expected_rate=0.05, params=CLASSIFIER, random_state=3)
    second, _ = combine_detectors(scrub, clf, expected_rate=0.05, configured=False,
                                  max_ratio=3.0)
    np.testing.assert_array_equal(first.scores, second.scores)
    np.testing.assert_array_equal(first.predicted, second.predicted)


def test_qc_summary_gives_prior_called_rate_and_reason(tabula_muris) -> None:
    settings = QCSettings.from_config({"doublet_method": "consensus"})
    filtered, metrics, summary = run_sample_qc(tabula_muris.copy(), sample="tm",
                                               species="mouse", settings=settings,
                                               random_state=0)
    row = summary.iloc[0]
    prior = 0.008 * 625 / 1000
    assert row["doublet_method"] == "consensus"
    assert row["expected_doublet_rate"] == pytest.approx(prior)
    scored = int(metrics["doublet_score"].notna().sum())
    assert row["called_doublet_rate"] == pytest.approx(row["n_doublet"] / scored)
    bounded = np.clip(row["doublet_rate_from_scores"], prior / 3, prior * 3)
    assert row["n_doublet"] == round(bounded * scored)
    assert row["doublet_rate_reason"].startswith("prior 0.50% (10x rule, 625 cells); ")
    assert set(metrics.loc[metrics["predicted_doublet"], "doublet_neighbour"]) <= set(
        metrics.loc[metrics["kept"], "cell"])
    assert filtered.n_obs == row["cells_out"]
