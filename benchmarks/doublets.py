"""Doublet detection across independent doublet generators (issues 19, 35). A script, not a test.

A caller tuned on one way of making doublets can learn that way; this benchmark plants
doublets made in four different ways and runs every method on the same cells in one run.

Generators (``GENERATORS``); the first three start from the real Tabula Muris lung channel's
cells that pass mscflow's outlier filters (620 cells) and share no code with mscflow's
simulators (``mscflow.qc.doublet_simulation``, the classifier's ``make_artificial``). The
cells used as parents leave the singlets; parents are two cells of different Leiden
clusters (``heterotypic``) or any two cells (``random``: heterotypic and homotypic pairs by
abundance):

* ``tm_raw_sum``: the raw counts of the two cells added (scrublet's own doublet model);
* ``tm_norm_rescaled``: the mean of the two cells' normalised profiles, Poisson counts at
  1.5-2.0x the pair's mean library;
* ``tm_downsampled_sum``: the summed counts thinned binomially to 1.0-1.4x the pair's mean
  library (a doublet that captured little more than one cell);
* ``template_nb``: ``mscflow.qc.doublet_simulation.simulate_sample`` (negative-binomial cells
  drawn around the channel's smoothed profiles, 3,000 cells, library gain 1.5; its ``mixed``
  and ``homotypic`` kinds); larger samples than the channel holds.

Rates 2, 5 and 10 %. Methods: ``scanpy_scrublet`` (``sc.pp.scrublet``), ``scrublet_fast``
(mscflow's), ``doubletdetection`` (4.3, BoostClassifier with leiden clustering,
``--dd-iters`` iterations, its default ``predict``), ``classifier`` (mscflow's),
``consensus`` (``mscflow.qc.doublet_consensus``: rank vote of fast scrublet + classifier,
rate from the data) and ``vote4`` (mean rank of the four detectors above, cells called by at
least two of them; not in the workflow: doubletdetection alone is >10x the fast scrublet).
Each method is given the planted rate as its prior; ``--rate-check`` then gives the
consensus one fixed prior (5 %) on every sample, so its calls can only follow the planted
2-10 % through the scores. ``consensus`` and ``vote4`` are formed from the detectors'
results of the same run (their seconds: the sum of the detectors'); the timing sample runs
the consensus itself.

Per sample and method: AUROC and AUPRC of the scores, cells called, precision, recall, F1
of the calls, seconds and peak resident memory above the pre-call level (sampled every
5 ms). Then per generator the mean over its samples and the issue-35 bar (AUPRC >= scanpy
scrublet's, F1 within 0.1 of the best method's); last, every method timed on one
``--time-cells`` sample (best of ``--repeat`` for mscflow's), per 10,000 cells.

    python benchmarks/doublets.py            # every sample (~15 min on 2 quiet cores)
    python benchmarks/doublets.py --quick --time-cells 0   # one sample per generator
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
from scipy import sparse
from sklearn.metrics import average_precision_score, roc_auc_score

from mscflow.inputs.readers import read_sample
from mscflow.qc.core import QCSettings, add_qc_metrics, flag_outliers
from mscflow.qc.doublet_classifier import DoubletClassifierSettings, classify_doublets
from mscflow.qc.doublet_consensus import combine_detectors, consensus_doublets, consensus_scores
from mscflow.qc.doublet_simulation import real_templates, simulate_sample
from mscflow.qc.doublets import DoubletResult, scrublet_fast

REPO = Path(__file__).resolve().parents[1]
TABULA_MURIS = REPO / "tests" / "data" / "tabula-muris-lung-10X_P7_8"
GENERATORS = ("tm_raw_sum", "tm_norm_rescaled", "tm_downsampled_sum", "template_nb")
RATES = (0.02, 0.05, 0.10)
CLASSIFIER = DoubletClassifierSettings.from_config({})
MAX_RATIO = QCSettings.from_config({}).doublet_rate_max_ratio

Method = Callable[[sparse.csr_matrix, float, int], DoubletResult]


@dataclass(frozen=True)
class Sample:
    """One planted sample: counts, truth (bool per cell), and where it came from."""

    generator: str
    mix: str
    rate: float
    counts: sparse.csr_matrix
    truth: np.ndarray


# --- generators on the real channel's cells --------------------------------------------

def channel_cells(seed: int) -> tuple[sparse.csr_matrix, np.ndarray, ad.AnnData]:
    """Raw counts of the channel's cells passing the outlier filters, their Leiden clusters
    (scanpy defaults: 2,000 HVGs, 30 PCs, 15 neighbours), and the cells as AnnData."""
    adata = read_sample(TABULA_MURIS, "10x_mtx", sample="tm")
    add_qc_metrics(adata, "mouse")
    flag_outliers(adata, QCSettings.from_config({}))
    adata = adata[~adata.obs["qc_fail"].to_numpy()].copy()
    work = adata.copy()
    sc.pp.normalize_total(work, target_sum=1e4)
    sc.pp.log1p(work)
    sc.pp.highly_variable_genes(work, n_top_genes=2000)
    sc.pp.pca(work, n_comps=30, mask_var="highly_variable", random_state=seed)
    sc.pp.neighbors(work, random_state=seed)
    sc.tl.leiden(work, flavor="igraph", n_iterations=2, random_state=seed)
    return (sparse.csr_matrix(adata.X, dtype=np.float64),
            work.obs["leiden"].to_numpy(str), adata)


def parent_pairs(clusters: np.ndarray, n_pairs: int, mix: str, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``n_pairs`` pairs of distinct cells, no cell twice; ``heterotypic``: the two cells of
    a pair in different clusters; ``random``: any two cells."""
    pool = list(rng.permutation(len(clusters)))
    first, second = [], []
    while len(first) < n_pairs:
        a = pool.pop()
        partner = next(i for i, b in enumerate(pool)
                       if mix == "random" or clusters[b] != clusters[a])
        first.append(a)
        second.append(pool.pop(partner))
    return np.array(first), np.array(second)


def form_doublets(counts: sparse.csr_matrix, first: np.ndarray, second: np.ndarray,
                  generator: str, rng: np.random.Generator) -> sparse.csr_matrix:
    """The doublets of the pairs, formed as the generator says (module docstring)."""
    a, b = counts[first].toarray(), counts[second].toarray()
    lib_a, lib_b = a.sum(axis=1), b.sum(axis=1)
    mean_lib = (lib_a + lib_b) / 2
    if generator == "tm_raw_sum":
        out = a + b
    elif generator == "tm_norm_rescaled":
        profile = (a / lib_a[:, None] + b / lib_b[:, None]) / 2
        out = rng.poisson(profile * (rng.uniform(1.5, 2.0, len(first)) * mean_lib)[:, None])
    elif generator == "tm_downsampled_sum":
        keep = rng.uniform(1.0, 1.4, len(first)) * mean_lib / (lib_a + lib_b)
        out = rng.binomial((a + b).astype(np.int64), keep[:, None])
    else:
        raise ValueError(f"unknown generator {generator!r}")
    return sparse.csr_matrix(out, dtype=np.float64)


def channel_sample(counts: sparse.csr_matrix, clusters: np.ndarray, generator: str, mix: str,
                   rate: float, seed: int) -> Sample:
    """Singlets: the channel's cells that are no parent; doublets: a ``rate`` share."""
    rng = np.random.default_rng(seed)
    n = counts.shape[0]
    n_dbl = int(round(rate * n / (1 + rate)))  # n - 2 d singlets + d doublets, d = rate x total
    first, second = parent_pairs(clusters, n_dbl, mix, rng)
    singles = np.setdiff1d(np.arange(n), np.r_[first, second])
    x = sparse.vstack([counts[singles], form_doublets(counts, first, second, generator, rng)],
                      format="csr")
    truth = np.r_[np.zeros(len(singles), bool), np.ones(n_dbl, bool)]
    order = rng.permutation(len(truth))
    return Sample(generator, mix, rate, x[order], truth[order])


def template_sample(templates, mix: str, rate: float, n_cells: int, seed: int) -> Sample:
    """The template generator's sample (its ``mixed`` kinds or ``homotypic`` only)."""
    adata, truth = simulate_sample(templates, n_cells=n_cells, doublet_rate=rate, gain=1.5,
                                   kind=mix, seed=seed)
    return Sample("template_nb", mix, rate, sparse.csr_matrix(adata.X, dtype=np.float64),
                  truth["doublet"].to_numpy(bool))


# --- methods ------------------------------------------------------------------------

def scanpy_scrublet(counts: sparse.csr_matrix, rate: float, seed: int) -> DoubletResult:
    """sc.pp.scrublet with its automatic threshold."""
    adata = ad.AnnData(counts.copy())
    sc.pp.scrublet(adata, expected_doublet_rate=rate, random_state=seed, verbose=False)
    return DoubletResult(adata.obs["doublet_score"].to_numpy(float),
                         adata.obs["predicted_doublet"].to_numpy(bool),
                         float(adata.uns["scrublet"]["threshold"]), np.empty(0))


def doubletdetection_method(n_iters: int) -> Method:
    """doubletdetection's BoostClassifier (leiden clustering, 2 jobs), its default predict."""
    def run(counts: sparse.csr_matrix, rate: float, seed: int) -> DoubletResult:
        import doubletdetection

        clf = doubletdetection.BoostClassifier(n_iters=n_iters, clustering_algorithm="leiden",
                                               random_state=seed, verbose=False, n_jobs=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            labels = clf.fit(counts).predict()
            scores = clf.doublet_score()
        return DoubletResult(np.asarray(scores, float), np.nan_to_num(labels).astype(bool),
                             float("nan"), np.empty(0))
    return run


def consensus(counts: sparse.csr_matrix, rate: float, seed: int) -> DoubletResult:
    """mscflow's consensus (the rate from the scores, ``rate`` as the prior)."""
    return consensus_doublets(counts, expected_rate=rate, configured=False,
                              classifier=CLASSIFIER, max_ratio=MAX_RATIO,
                              random_state=seed)[0]


def methods(dd_iters: int) -> dict[str, Method]:
    """Every method of the run, by name (vote4 is formed from the first four)."""
    return {
        "scanpy_scrublet": scanpy_scrublet,
        "scrublet_fast": lambda x, rate, seed: scrublet_fast(x, expected_rate=rate,
                                                             random_state=seed),
        "doubletdetection": doubletdetection_method(dd_iters),
        "classifier": lambda x, rate, seed: classify_doublets(
            x, expected_rate=rate, params=CLASSIFIER, random_state=seed),
        "consensus": consensus,
    }


def vote4(results: dict[str, DoubletResult]) -> DoubletResult:
    """Mean rank of the four detectors; called by at least two."""
    names = ("scanpy_scrublet", "scrublet_fast", "doubletdetection", "classifier")
    scores = consensus_scores([results[n].scores for n in names])
    votes = np.sum([results[n].predicted for n in names], axis=0)
    return DoubletResult(scores, votes >= 2, float("nan"), np.empty(0))


# --- measuring -------------------------------------------------------------------------

def rss_mb() -> float:
    """Resident memory of this process (MB)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measured(fn: Callable[[], DoubletResult]) -> tuple[DoubletResult, float, float]:
    """The result, seconds, and peak RSS above the level before the call (MB)."""
    base, peak, done = rss_mb(), [0.0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    done.set()
    watcher.join()
    return result, seconds, max(peak[0], rss_mb()) - base


def evaluate(result: DoubletResult, truth: np.ndarray) -> dict[str, float]:
    """AUROC, AUPRC of the scores; calls, precision, recall, F1."""
    scores = np.nan_to_num(result.scores, nan=np.nanmin(result.scores))
    called = result.predicted
    hits = int((called & truth).sum())
    precision = hits / max(int(called.sum()), 1)
    recall = hits / max(int(truth.sum()), 1)
    return {"AUROC": roc_auc_score(truth, scores), "AUPRC": average_precision_score(truth, scores),
            "called": int(called.sum()), "planted": int(truth.sum()), "precision": precision,
            "recall": recall, "F1": 2 * precision * recall / max(precision + recall, 1e-12)}


def consensus_of(results: dict[str, DoubletResult], prior: float) -> DoubletResult:
    """mscflow's consensus from the fast scrublet's and the classifier's results of this
    run (what :func:`consensus` computes, without running both again)."""
    return combine_detectors(results["scrublet_fast"], results["classifier"],
                             expected_rate=prior, configured=False, max_ratio=MAX_RATIO)[0]


def run_sample(sample: Sample, all_methods: dict[str, Method], seed: int,
               rate_check: float | None) -> list[dict]:
    """Every method on one sample; one row each. The consensus and vote4 rows are formed
    from the detectors' results (seconds: the sum of theirs). ``rate_check``: the consensus
    again with that prior instead of the planted rate."""
    base = {"generator": sample.generator, "mix": sample.mix, "rate": sample.rate,
            "cells": sample.counts.shape[0]}
    rows, results = [], {}
    for name, fn in all_methods.items():
        if name == "consensus":
            continue
        result, seconds, mb = measured(lambda fn=fn: fn(sample.counts, sample.rate, seed))
        results[name] = result
        rows.append({**base, "method": name, "prior": sample.rate, "seconds": seconds,
                     "peak_MB": mb, **evaluate(result, sample.truth)})
    secs = {r["method"]: r["seconds"] for r in rows}
    rows.append({**base, "method": "consensus", "prior": sample.rate,
                 "seconds": secs["scrublet_fast"] + secs["classifier"], "peak_MB": np.nan,
                 **evaluate(consensus_of(results, sample.rate), sample.truth)})
    rows.append({**base, "method": "vote4", "prior": sample.rate,
                 "seconds": sum(secs.values()), "peak_MB": np.nan,
                 **evaluate(vote4(results), sample.truth)})
    if rate_check is not None:
        clf = classify_doublets(sample.counts, expected_rate=rate_check, params=CLASSIFIER,
                                random_state=seed)
        # the fast scrublet's prior only rescales its scores: its ranks stay
        both = {"scrublet_fast": results["scrublet_fast"], "classifier": clf}
        rows.append({**base, "method": f"consensus, prior {rate_check:.0%}",
                     "prior": rate_check, "seconds": np.nan, "peak_MB": np.nan,
                     **evaluate(consensus_of(both, rate_check), sample.truth)})
    for row in rows[-(len(all_methods) + 1 + (rate_check is not None)):]:
        print(f"  {row['method']:24s} {row['seconds']:7.1f} s  AUROC {row['AUROC']:.3f}  "
              f"AUPRC {row['AUPRC']:.3f}  called {row['called']:4d}/{row['planted']:4d}  "
              f"F1 {row['F1']:.3f}", flush=True)
    return rows


def summarise(table: pd.DataFrame) -> None:
    """Per generator means, the bar of issue 35, the rate check and the times."""
    main = table[~table["method"].str.startswith("consensus, prior")]
    order = list(dict.fromkeys(main["method"]))
    print("\n## Per generator, rate and mix\n")
    print(main.pivot_table(index=["generator", "rate", "mix"], columns="method",
                           values=["AUPRC", "F1"])
          .reindex(columns=order, level=1).to_markdown(floatfmt=".3f"))
    print("\n## Mean per generator\n")
    means = main.groupby(["generator", "method"], sort=False)[
        ["AUROC", "AUPRC", "F1"]].mean().reset_index()
    print(means.to_markdown(index=False, floatfmt=".3f"))
    print("\n## Bar: AUPRC >= scanpy scrublet's and F1 within 0.1 of the best, per generator\n")
    for method in order:
        verdicts = []
        for gen, part in means.groupby("generator", sort=False):
            part = part.set_index("method")
            ok = (part.loc[method, "AUPRC"] >= part.loc["scanpy_scrublet", "AUPRC"]
                  and part.loc[method, "F1"] >= part["F1"].max() - 0.1)
            verdicts.append(f"{gen} {'pass' if ok else 'FAIL'}")
        print(f"{method:18s} " + ", ".join(verdicts))
    check = table[table["method"].str.startswith("consensus")]
    if check["method"].nunique() > 1:
        print("\n## Called rate of the consensus: prior = planted rate, and one fixed prior\n")
        called = check.assign(called_rate=check["called"] / check["cells"])
        print(called.pivot_table(index=["generator", "rate"], columns="method",
                                 values="called_rate").to_markdown(floatfmt=".4f"))


def time_methods(sample: Sample, all_methods: dict[str, Method], seed: int, repeat: int
                 ) -> pd.DataFrame:
    """Seconds (best of ``repeat`` for mscflow's methods, one run for the peers) and peak
    RSS growth of every method on one sample, per 10,000 cells and over the fast scrublet."""
    rows = []
    for name, fn in all_methods.items():
        runs = [measured(lambda fn=fn: fn(sample.counts, sample.rate, seed))
                for _ in range(repeat if name in ("scrublet_fast", "classifier", "consensus")
                               else 1)]
        best = min(runs, key=lambda r: r[1])
        rows.append({"method": name, "cells": sample.counts.shape[0], "runs": len(runs),
                     "seconds": best[1], "s per 10k cells": best[1] * 1e4 / sample.counts.shape[0],
                     "peak MB": max(r[2] for r in runs), **evaluate(best[0], sample.truth)})
        print(f"  {name:18s} {best[1]:7.1f} s  {rows[-1]['peak MB']:7.0f} MB", flush=True)
    table = pd.DataFrame(rows).set_index("method")
    table["x scrublet_fast"] = table["seconds"] / table.loc["scrublet_fast", "seconds"]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="one sample per generator (5 %%, random/mixed pairs)")
    parser.add_argument("--generators", nargs="+", choices=GENERATORS, default=GENERATORS)
    parser.add_argument("--template-cells", type=int, default=3000)
    parser.add_argument("--dd-iters", type=int, default=10,
                        help="doubletdetection iterations (its default: 10)")
    parser.add_argument("--rate-check", type=float, default=0.05,
                        help="the consensus again with this prior for every sample; 0: not")
    parser.add_argument("--time-cells", type=int, default=10000,
                        help="cells of the timing sample (template_nb, mixed 5 %%); 0: none")
    parser.add_argument("--repeat", type=int, default=2,
                        help="timing runs of mscflow's methods (best kept)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" /
                        "doublets.tsv")
    args = parser.parse_args()
    sc.settings.verbosity = 0
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    all_methods = methods(args.dd_iters)
    counts, clusters, cells = channel_cells(args.seed)
    print(f"channel: {counts.shape[0]} cells, {len(set(clusters))} Leiden clusters")
    rates = (0.05,) if args.quick else RATES
    rows = []
    for g, generator in enumerate(args.generators):
        if generator == "template_nb":
            templates = real_templates(cells)
            plan = [("mixed", r) for r in rates] + ([] if args.quick else [("homotypic", 0.05)])
        else:
            plan = [(m, r) for m in (("random",) if args.quick else ("heterotypic", "random"))
                    for r in rates]
        for i, (mix, rate) in enumerate(plan):
            seed = args.seed + 100 * g + i
            sample = (template_sample(templates, mix, rate, args.template_cells, seed)
                      if generator == "template_nb"
                      else channel_sample(counts, clusters, generator, mix, rate, seed))
            print(f"\n{generator} {mix} {rate:.0%}: {sample.counts.shape[0]} cells, "
                  f"{int(sample.truth.sum())} doublets", flush=True)
            rows += run_sample(sample, all_methods, args.seed, args.rate_check or None)
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, sep="\t", index=False)
    summarise(table)
    if args.time_cells:
        print(f"\n## Time and peak memory at {args.time_cells} cells (template_nb, mixed 5 %), "
              f"load average {os.getloadavg()[0]:.2f}\n", flush=True)
        timing = time_methods(template_sample(real_templates(cells), "mixed", 0.05,
                                              args.time_cells, args.seed + 999),
                              all_methods, args.seed, args.repeat)
        print(timing.to_markdown(floatfmt=".3f"))
        timing.to_csv(args.out.with_name(args.out.stem + "_timing.tsv"), sep="\t")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}; table: {args.out}")


if __name__ == "__main__":
    main()
