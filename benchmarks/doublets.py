"""Doublet detection against planted truth (issue 19). A script, not a test.

Methods, run in the same process on the same samples:

* ``classifier``: mscflow's default (``mscflow.qc.doublet_classifier``), calls following the
  expected doublet rate;
* ``scrublet_fast``: mscflow's fast scrublet (``mscflow.qc.doublets.scrublet_fast``), automatic
  threshold;
* ``scanpy_scrublet``: ``sc.pp.scrublet`` with its automatic threshold (the reference);
* peers where they are installed: ``doubletdetection`` (BoostClassifier, its default
  ``predict``) and ``pyscdblfinder`` (``sc_dbl_finder``, its threshold).

Samples: ``mscflow.qc.doublet_simulation`` on real profiles (cells of the Tabula Muris lung
channel in tests/data, clustered; doublets of distinct cell types, of similar cell types,
homotypic, or a mix drawn by abundance), at doublet rates of 2-10 %, library gains of
1.2-2.0 and 1,000-10,000 cells; and one lung sample of the demo generator
(``mscflow.demo.simulate``: its realistic mix of kinds). Every method is given the expected doublet
rate the workflow would use when ``qc.expected_doublet_rate`` is unset (0.8 % per 1,000
cells, the 10x rule of thumb; ``--expected planted`` gives the planted rate instead).

Prints per sample and method: seconds, AUPRC of the scores, cells called, precision,
recall and F1 of the calls, recall per doublet kind; then mean F1 per method across the
samples, the acceptance checks of issue 19 and the time of the classifier over the fast
scrublet at 6,000 cells. Check ``uptime`` first: times are only comparable on a quiet
machine.

    python benchmarks/doublets.py              # every sample (~30 min on 2 quiet cores)
    python benchmarks/doublets.py --quick      # three samples, no peers
"""

from __future__ import annotations

import argparse
import os
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
from sklearn.metrics import average_precision_score

from mscflow.inputs.readers import read_sample
from mscflow.qc.core import QCSettings, add_qc_metrics, flag_outliers
from mscflow.qc.doublet_classifier import DoubletClassifierSettings, classify_doublets
from mscflow.qc.doublet_simulation import DOUBLET_KINDS, Templates, real_templates, simulate_sample
from mscflow.qc.doublets import DoubletResult, expected_doublet_rate, scrublet_fast

REPO = Path(__file__).resolve().parents[1]
TABULA_MURIS = REPO / "tests" / "data" / "tabula-muris-lung-10X_P7_8"
ACCEPTANCE = "distinct 5% gain 1.5, 6k"


@dataclass(frozen=True)
class Scenario:
    """One planted sample: kind of doublets, rate, library gain, cells."""

    name: str
    kind: str
    rate: float
    gain: float
    n_cells: int


SCENARIOS = (
    Scenario(ACCEPTANCE, "heterotypic_distinct", 0.05, 1.5, 6000),
    Scenario("distinct 5% gain 1.2, 6k", "heterotypic_distinct", 0.05, 1.2, 6000),
    Scenario("distinct 5% gain 2.0, 3k", "heterotypic_distinct", 0.05, 2.0, 3000),
    Scenario("distinct 2% gain 1.5, 1k", "heterotypic_distinct", 0.02, 1.5, 1000),
    Scenario("distinct 10% gain 1.5, 10k", "heterotypic_distinct", 0.10, 1.5, 10000),
    Scenario("similar 5% gain 1.5, 6k", "heterotypic_similar", 0.05, 1.5, 6000),
    Scenario("similar 10% gain 2.0, 3k", "heterotypic_similar", 0.10, 2.0, 3000),
    Scenario("homotypic 5% gain 1.5, 3k", "homotypic", 0.05, 1.5, 3000),
    Scenario("mixed 5% gain 1.5, 6k", "mixed", 0.05, 1.5, 6000),
    Scenario("mixed 8% gain 1.2, 10k", "mixed", 0.08, 1.2, 10000),
    Scenario("mixed 2% gain 2.0, 2k", "mixed", 0.02, 2.0, 2000),
)
QUICK = (ACCEPTANCE, "similar 5% gain 1.5, 6k", "mixed 2% gain 2.0, 2k")
DEMO = "demo lung (mixed kinds, 5%), 6k"

Method = Callable[[sparse.csr_matrix, float, int], DoubletResult]


def scanpy_scrublet(counts: sparse.csr_matrix, rate: float, seed: int) -> DoubletResult:
    """sc.pp.scrublet with its automatic threshold."""
    adata = ad.AnnData(counts.copy())
    sc.pp.scrublet(adata, expected_doublet_rate=rate, random_state=seed, verbose=False)
    return DoubletResult(adata.obs["doublet_score"].to_numpy(float),
                         adata.obs["predicted_doublet"].to_numpy(bool),
                         float(adata.uns["scrublet"]["threshold"]), np.empty(0))


def doubletdetection_peer(counts: sparse.csr_matrix, rate: float, seed: int) -> DoubletResult:
    """doubletdetection's BoostClassifier (defaults, 2 jobs) and its default predict."""
    import doubletdetection

    clf = doubletdetection.BoostClassifier(random_state=seed, verbose=False, n_jobs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        labels = clf.fit(counts).predict()
        scores = clf.doublet_score()
    return DoubletResult(np.asarray(scores, float), np.nan_to_num(labels).astype(bool),
                         float("nan"), np.empty(0))


def pyscdblfinder_peer(counts: sparse.csr_matrix, rate: float, seed: int) -> DoubletResult:
    """pyscdblfinder's sc_dbl_finder (genes x cells input) with the expected rate."""
    from pyscdblfinder import sc_dbl_finder

    res = sc_dbl_finder(counts.T.tocsr(), dbr=rate, random_state=seed, progress=False)
    table = res.table.iloc[: res.n_real]
    return DoubletResult(table["score"].to_numpy(float),
                         (table["class"] == "doublet").to_numpy(bool),
                         float(res.score_threshold), np.empty(0))


def available_peers() -> dict[str, Method]:
    """The optional peers that import here (reported either way)."""
    peers: dict[str, Method] = {}
    for name, module, method in (("doubletdetection", "doubletdetection", doubletdetection_peer),
                                 ("pyscdblfinder", "pyscdblfinder", pyscdblfinder_peer)):
        try:
            __import__(module)
        except Exception as err:  # noqa: BLE001 - report any failure to import
            print(f"peer {name}: not available ({type(err).__name__}: {err})")
            continue
        peers[name] = method
    return peers


def methods(with_peers: bool) -> dict[str, Method]:
    """Every method of the run, by name."""
    settings = DoubletClassifierSettings.from_config({})
    out: dict[str, Method] = {
        "classifier": lambda x, rate, seed: classify_doublets(
            x, expected_rate=rate, params=settings, random_state=seed),
        "scrublet_fast": lambda x, rate, seed: scrublet_fast(x, expected_rate=rate,
                                                             random_state=seed),
        "scanpy_scrublet": scanpy_scrublet,
    }
    if with_peers:
        out.update(available_peers())
    return out


def tabula_muris_templates() -> Templates:
    """Templates from the real lung channel's cells that pass mscflow's outlier filters."""
    adata = read_sample(TABULA_MURIS, "10x_mtx", sample="tm")
    add_qc_metrics(adata, "mouse")
    flag_outliers(adata, QCSettings.from_config({}))
    return real_templates(adata[~adata.obs["qc_fail"].to_numpy()].copy())


def demo_sample(n_cells: int, seed: int) -> tuple[sparse.csr_matrix, pd.DataFrame]:
    """The lung control sample of the demo generator (the MSC one is simulated too and left
    aside), cells passing the outlier filters."""
    from mscflow.demo.model import DemoSpec
    from mscflow.demo.simulate import simulate_demo
    from mscflow.genesets import read_gmt

    spec = DemoSpec(seed=seed, cells_per_sample=n_cells, replicates=1, tissues=("lung",))
    model, samples = simulate_demo(read_gmt(REPO / "resources/genesets/programmes_mouse.gmt"),
                                   read_gmt(REPO / "resources/genesets/celltype_markers_mouse.gmt"),
                                   spec)
    _, counts, truth = samples[0]
    adata = ad.AnnData(sparse.csr_matrix(counts, dtype=np.float32))
    adata.var_names = list(model.genes)
    add_qc_metrics(adata, "mouse")
    flag_outliers(adata, QCSettings.from_config({}))
    keep = ~adata.obs["qc_fail"].to_numpy()
    return adata.X[keep], truth.loc[keep].reset_index(drop=True)


def evaluate(result: DoubletResult, truth: pd.DataFrame) -> dict[str, float]:
    """AUPRC of the scores; precision, recall, F1 of the calls; recall per kind."""
    planted = truth["doublet"].to_numpy(bool)
    scores = np.nan_to_num(result.scores, nan=np.nanmin(result.scores))
    called = result.predicted
    hits = int((called & planted).sum())
    precision = hits / max(int(called.sum()), 1)
    recall = hits / max(int(planted.sum()), 1)
    row = {"AUPRC": average_precision_score(planted, scores), "called": int(called.sum()),
           "planted": int(planted.sum()), "precision": precision, "recall": recall,
           "F1": 2 * precision * recall / max(precision + recall, 1e-12)}
    for kind in DOUBLET_KINDS:
        of_kind = truth["doublet_kind"].to_numpy(str) == kind
        if of_kind.any():
            row[f"recall {kind}"] = float(called[of_kind].mean())
    return row


def run_sample(name: str, counts: sparse.csr_matrix, truth: pd.DataFrame, rate: float,
               all_methods: dict[str, Method], seed: int, peer_max_cells: int
               ) -> list[dict]:
    """Every method on one sample; one row each."""
    rows = []
    for method, fn in all_methods.items():
        if method not in ("classifier", "scrublet_fast", "scanpy_scrublet") and \
                counts.shape[0] > peer_max_cells:
            continue
        start = time.perf_counter()
        try:
            result = fn(counts, rate, seed)
        except Exception as err:  # noqa: BLE001 - a peer failing is reported, not fatal
            print(f"  {method} failed on {name}: {type(err).__name__}: {err}")
            continue
        seconds = time.perf_counter() - start
        row = {"sample": name, "method": method, "cells": counts.shape[0],
               "expected_rate": rate, "seconds": seconds, **evaluate(result, truth)}
        print(f"  {method:16s} {seconds:7.1f} s  AUPRC {row['AUPRC']:.3f}  called "
              f"{row['called']:4d}/{row['planted']:4d}  P {row['precision']:.3f}  R "
              f"{row['recall']:.3f}  F1 {row['F1']:.3f}", flush=True)
        rows.append(row)
    return rows


def summarise(table: pd.DataFrame) -> None:
    """Mean F1 per method, the acceptance checks, the homotypic numbers, the time ratio."""
    kinds = [c for c in table.columns if c.startswith("recall ")]
    print("\n## All samples\n")
    print(table[["sample", "method", "cells", "expected_rate", "seconds", "AUPRC", "called",
                 "planted", "precision", "recall", "F1", *kinds]]
          .to_markdown(index=False, floatfmt=".3f"))
    both = table.groupby("sample")["method"].transform(
        lambda m: {"classifier", "scanpy_scrublet"} <= set(m))
    print("\n## Mean over the samples every method ran on\n")
    common = table[table.groupby("sample")["method"].transform("nunique")
                   == table["method"].nunique()]
    for label, part in (("all methods", common), ("classifier vs scanpy", table[both])):
        means = part.groupby("method")[["AUPRC", "precision", "recall", "F1"]].mean()
        print(f"{label} ({part['sample'].nunique()} samples):")
        print(means.to_markdown(floatfmt=".3f"))
    acc = table[(table["sample"] == ACCEPTANCE)].set_index("method")
    if "classifier" in acc.index:
        c = acc.loc["classifier"]
        ok = c["precision"] >= 0.8 and c["recall"] >= 0.8 and c["F1"] >= 0.8
        print(f"\nacceptance, {ACCEPTANCE}: classifier P {c['precision']:.3f} R "
              f"{c['recall']:.3f} F1 {c['F1']:.3f} -> {'PASS' if ok else 'FAIL'}; "
              f"scanpy scrublet P {acc.loc['scanpy_scrublet', 'precision']:.3f} R "
              f"{acc.loc['scanpy_scrublet', 'recall']:.3f} F1 "
              f"{acc.loc['scanpy_scrublet', 'F1']:.3f}")
    f1 = table[both].groupby("method")["F1"].mean()
    print(f"mean F1 over every level: classifier {f1['classifier']:.3f} vs scanpy scrublet "
          f"{f1['scanpy_scrublet']:.3f} -> "
          f"{'PASS' if f1['classifier'] > f1['scanpy_scrublet'] else 'FAIL'}")
    if "recall homotypic" in table:
        homo = table.dropna(subset=["recall homotypic"]).groupby("method")["recall homotypic"]
        print("recall of homotypic doublets (mean over samples holding them):")
        print(homo.mean().to_markdown(floatfmt=".3f"))
    at_6k = table[table["cells"].between(5000, 6000)].pivot_table(
        index="sample", columns="method", values="seconds")
    if {"classifier", "scrublet_fast"} <= set(at_6k.columns):
        ratio = at_6k["classifier"] / at_6k["scrublet_fast"]
        print("\n## Time at ~6,000 cells (s)\n")
        print(at_6k.assign(**{"classifier / scrublet_fast": ratio})
              .to_markdown(floatfmt=".2f"))
        print(f"classifier / scrublet_fast: median {ratio.median():.2f}x "
              f"(target <= 3x) -> {'PASS' if ratio.median() <= 3 else 'FAIL'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="three samples, no peers")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--no-demo", action="store_true")
    parser.add_argument("--expected", choices=("rule", "planted"), default="rule")
    parser.add_argument("--peer-max-cells", type=int, default=6000,
                        help="peers only run on samples up to this size (they are slow)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" /
                        "doublets.tsv")
    args = parser.parse_args()
    sc.settings.verbosity = 0
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    all_methods = methods(with_peers=not (args.quick or args.no_peers))
    print("methods:", ", ".join(all_methods))
    templates = tabula_muris_templates()
    print(f"templates: {len(templates.clusters)} real cells in "
          f"{len(set(templates.clusters))} clusters, {templates.profiles.shape[1]} genes")
    rows = []
    chosen = [s for s in SCENARIOS if not args.quick or s.name in QUICK]
    for i, scenario in enumerate(chosen):
        adata, truth = simulate_sample(templates, n_cells=scenario.n_cells,
                                       doublet_rate=scenario.rate, gain=scenario.gain,
                                       kind=scenario.kind, seed=args.seed + i)
        rate = (scenario.rate if args.expected == "planted"
                else expected_doublet_rate(None, scenario.n_cells))
        print(f"\n{scenario.name}: {scenario.n_cells} cells, {int(truth['doublet'].sum())} "
              f"doublets planted, expected rate given {rate:.4f}", flush=True)
        rows += run_sample(scenario.name, sparse.csr_matrix(adata.X), truth, rate,
                           all_methods, args.seed, args.peer_max_cells)
    if not (args.quick or args.no_demo):
        counts, truth = demo_sample(6300, args.seed)
        rate = (float(truth["doublet"].mean()) if args.expected == "planted"
                else expected_doublet_rate(None, 6300))
        print(f"\n{DEMO}: {counts.shape[0]} cells after the outlier filters, "
              f"{int(truth['doublet'].sum())} doublets planted, expected rate {rate:.4f}")
        rows += run_sample(DEMO, counts, truth, rate, all_methods, args.seed,
                           args.peer_max_cells)
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, sep="\t", index=False)
    summarise(table)
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}; table: {args.out}")


if __name__ == "__main__":
    main()
