"""Consensus doublet calls: a vote of two detectors and a rate that follows the data.

The score of a cell is the mean, over the detectors, of its rank percentile among the
sample's cells (0 = least doublet-like, 1 = most), so detectors on different scales weigh
alike (the rank vote nf-core/scdownstream and scds's ``hybrid`` use). The detectors are
mscflow's fast scrublet (:func:`mscflow.qc.doublets.scrublet_fast`, pairs of summed counts,
k-nearest-neighbour share) and the classifier
(:func:`mscflow.qc.doublet_classifier.classify_doublets`, thinned artificial doublets,
gradient boosting); they fail differently, so the vote ranks better than either on doublets
made in ways neither simulates (benchmarks/README.md, "Doublets across generators"). It
takes the two detectors' times added: about 2x the fast scrublet's.

How many cells are called (:func:`decide_rate`): the 10x loading rule (0.8 % per 1,000
cells) is the prior; the data say how many cells score like doublets: the share of real
cells scoring at least the classifier's median artificial doublet, over the share of
artificial doublets there (one half; :func:`rate_from_scores`). The called rate is that
estimate kept within a factor ``max_ratio`` of the prior (the prior when there is no
estimate); a configured ``qc.expected_doublet_rate`` overrides both. The top-scoring cells
by the consensus are called. (Scrublet's bimodality threshold, the share of cells above it
over the share of its simulated doublets above it, was the other candidate: on the
benchmark's samples it estimated 2.6-4.7 % where 5.7 % were planted, and the calls' F1 was
0.03-0.17 lower per generator.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.stats import rankdata

from mscflow.qc.doublet_classifier import DoubletClassifierSettings, classify_doublets
from mscflow.qc.doublets import DoubletResult, scrublet_fast

CONSENSUS_DETECTORS = ("scrublet", "classifier")


@dataclass(frozen=True)
class RateDecision:
    """The doublet rate of one sample: the prior, what the scores showed (NaN if nothing),
    the rate called and why it is that one."""

    prior: float
    from_scores: float
    called: float
    reason: str


def rank_percentiles(scores: np.ndarray) -> np.ndarray:
    """Each score's rank among the finite ones scaled to (0, 1]; NaN stays NaN."""
    out = np.full(len(scores), np.nan)
    ok = np.isfinite(scores)
    if ok.any():
        out[ok] = rankdata(scores[ok], method="average") / ok.sum()
    return out


def consensus_scores(score_sets: list[np.ndarray]) -> np.ndarray:
    """Mean rank percentile over the detectors (cells unscored by all stay NaN)."""
    ranks = np.vstack([rank_percentiles(np.asarray(s, dtype=np.float64)) for s in score_sets])
    scored = np.isfinite(ranks).any(axis=0)
    out = np.full(ranks.shape[1], np.nan)
    out[scored] = np.nanmean(ranks[:, scored], axis=0)
    return out


def rate_from_scores(real: np.ndarray, artificial: np.ndarray) -> float:
    """Doublet rate the scores show: the share of real cells scoring at least the median
    artificial doublet divided by the share of artificial doublets there (about one half);
    NaN without scores. Cells without a score (NaN) are left out."""
    real = real[np.isfinite(real)]
    artificial = artificial[np.isfinite(artificial)]
    if len(real) == 0 or len(artificial) == 0:
        return float("nan")
    cut = float(np.median(artificial))
    return float(min((real >= cut).mean() / max((artificial >= cut).mean(), 1e-9), 1.0))


def decide_rate(prior: float, from_scores: float, *, configured: bool,
                max_ratio: float) -> RateDecision:
    """The rate to call: configured, else the scores' estimate within ``max_ratio`` of the
    prior, else (no estimate) the prior; with the reason in words."""
    if configured:
        return RateDecision(prior, from_scores, prior,
                            "configured rate (qc.expected_doublet_rate)")
    if not np.isfinite(from_scores):
        return RateDecision(prior, from_scores, prior,
                            "no scores to estimate from: prior")
    low, high = prior / max_ratio, prior * max_ratio
    called = float(np.clip(from_scores, low, high))
    if from_scores > high:
        reason = f"scores show {from_scores:.2%}: capped at {max_ratio:g}x the prior"
    elif from_scores < low:
        reason = f"scores show {from_scores:.2%}: floored at the prior / {max_ratio:g}"
    elif from_scores > prior:
        reason = f"scores show more doublets than the prior ({from_scores:.2%})"
    else:
        reason = f"scores show fewer doublets than the prior ({from_scores:.2%})"
    return RateDecision(prior, from_scores, called, reason)


def call_top(scores: np.ndarray, rate: float) -> tuple[np.ndarray, float]:
    """Calls of the ``rate`` share of scored cells with the highest scores, and the cut
    (the lowest called score; +inf when none is called)."""
    ok = np.isfinite(scores)
    n_called = min(int(round(rate * ok.sum())), int(ok.sum()))
    called = np.zeros(len(scores), dtype=bool)
    if n_called == 0:
        return called, float("inf")
    order = np.flatnonzero(ok)[np.argsort(-scores[ok], kind="stable")]
    called[order[:n_called]] = True
    return called, float(scores[order[n_called - 1]])


def combine_detectors(scrub: DoubletResult, clf: DoubletResult, *, expected_rate: float,
                      configured: bool, max_ratio: float) -> tuple[DoubletResult, RateDecision]:
    """The consensus of a fast-scrublet and a classifier result on the same cells: rank
    vote, rate decision, top calls; the embedding is the scrublet's."""
    scores = consensus_scores([scrub.scores, clf.scores])
    decision = decide_rate(expected_rate, rate_from_scores(clf.scores, clf.scores_sim),
                           configured=configured, max_ratio=max_ratio)
    called, cut = call_top(scores, decision.called)
    result = DoubletResult(scores, called, cut, np.empty(0), expected_rate, scrub.embedding)
    return result, decision


def consensus_doublets(counts: sparse.spmatrix, *, expected_rate: float, configured: bool,
                       classifier: DoubletClassifierSettings, max_ratio: float,
                       random_state: int = 0) -> tuple[DoubletResult, RateDecision]:
    """Consensus scores and calls of one sample's raw counts (cells x genes); see the module
    docstring and :func:`combine_detectors`."""
    scrub = scrublet_fast(counts, expected_rate=expected_rate, random_state=random_state)
    clf = classify_doublets(counts, expected_rate=expected_rate, params=classifier,
                            random_state=random_state)
    return combine_detectors(scrub, clf, expected_rate=expected_rate, configured=configured,
                             max_ratio=max_ratio)
