"""Trajectory stage benchmark: wall time and peak memory at the end-to-end benchmark's size,
against a plain scanpy script doing the same analysis in one process.

Generates (or reuses) the end-to-end benchmark's data (``end_to_end.generate``: 16 samples x
6,000 cells, ~86k cells after QC), runs the workflow up to the annotation once, then runs
the trajectory rules ``--repeat`` times with ``--forcerun`` (per-job wall time and peak RSS
from Snakemake's ``benchmark:`` files, steps from the job logs), and a plain scanpy script
in its own process: ``read_h5ad`` of the whole annotated file, per tissue the lineage
subset, ``pp.neighbors`` (scanpy's defaults on the representation the run's graph used),
``tl.paga``, ``tl.diffmap``, the same root, ``tl.dpt``. Prints both, their ratio and the
agreement of the two pseudotimes (Spearman per tissue). Usage::

    python benchmarks/trajectory.py                         # 16 samples x 6,000 cells
    python benchmarks/trajectory.py --shape 8x1500x3000 --repeat 1   # quick

Timings depend on machine load: check ``uptime`` first and rerun when the machine is quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from end_to_end import OUT, generate, make_workflow_dir, run_workflow  # noqa: E402

UPSTREAM = ["results/annotate/annotated.h5ad", "results/scores/marker_scores.parquet"]
RULES = ["trajectory", "trajectory_shifts", "trajectory_plot_paga",
         "trajectory_plot_programmes", "trajectory_plot_density"]
TARGETS = ["results/trajectory/shifts.tsv", "results/trajectory/plots/paga_umap.png",
           "results/trajectory/plots/programmes_along_pseudotime.png",
           "results/trajectory/plots/density_along_pseudotime.png"]


def plain_script(workdir: Path, out: Path) -> None:
    """The peer: the same analysis as a user would write it with scanpy, in one process."""
    begin = time.perf_counter()
    import anndata as ad
    import numpy as np
    import scanpy as sc

    from mscflow.trajectory.core import TrajectorySettings, root_scores

    settings = TrajectorySettings.from_config({}, random_state=0, n_jobs=2)
    adata = ad.read_h5ad(workdir / "results/annotate/annotated.h5ad")
    markers = pd.read_parquet(workdir / "results/scores/marker_scores.parquet")
    params = adata.uns["neighbors"]["params"]  # the run's representation (Harmony when on)
    rep = str(params.get("use_rep", "X_pca"))
    n_pcs = int(params["n_pcs"]) if rep == "X_pca" and "n_pcs" in params else None
    frames = []
    for tissue in sorted(adata.obs["tissue"].astype(str).unique()):
        keep = (adata.obs["tissue"].astype(str) == tissue) & adata.obs["cell_type"].isin(
            settings.labels)
        sub = adata[keep.to_numpy()].copy()
        sc.pp.neighbors(sub, n_neighbors=15, use_rep=rep, n_pcs=n_pcs, random_state=0)
        sc.tl.paga(sub, groups="leiden_1")
        sc.tl.diffmap(sub, n_comps=15)
        is_root = sub.obs["cell_type"] == settings.root_label
        score = root_scores(sub.obs, markers, settings)[is_root.to_numpy()]
        sub.uns["iroot"] = int(sub.obs_names.get_loc(score.idxmax()))
        sc.tl.dpt(sub, n_dcs=10)
        frames.append(sub.obs[["tissue"]].assign(pseudotime=sub.obs["dpt_pseudotime"]))
    pd.concat(frames).to_parquet(out / "pseudotime.parquet")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (out / "run.json").write_text(json.dumps({"wall": time.perf_counter() - begin,
                                              "max_rss_mb": rss, "cells": adata.n_obs}))
    print(np.round(rss), "MB")


def run_plain(workdir: Path, out: Path) -> dict:
    """The peer in a fresh process (imports included in its wall time)."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--plain", str(workdir), str(out)], check=True)
    result = json.loads((out / "run.json").read_text())
    result["process_wall"] = time.perf_counter() - start
    return result


def rule_benchmarks(workdir: Path) -> pd.DataFrame:
    """Wall seconds and peak RSS of every trajectory job (Snakemake benchmark files)."""
    rows = []
    for path in sorted((workdir / "benchmarks" / "trajectory").glob("*.tsv")):
        table = pd.read_csv(path, sep="\t")
        rows.append({"job": path.stem, "s": float(table["s"].iloc[0]),
                     "max_rss_mb": float(pd.to_numeric(table["max_rss"], errors="coerce")
                                         .fillna(0).iloc[0])})
    return pd.DataFrame(rows)


def logged_steps(workdir: Path) -> pd.DataFrame:
    """``step <name>: <s> s`` lines of the trajectory job's log."""
    rows = []
    for line in (workdir / "logs/trajectory/trajectory.log").read_text().splitlines():
        if " step " in line and line.rstrip().endswith(" s"):
            name, seconds = line.split(" step ", 1)[1].rsplit(": ", 1)
            rows.append({"step": name, "s": float(seconds.split()[0])})
    return pd.DataFrame(rows)


def agreement(workdir: Path, plain_out: Path) -> dict[str, float]:
    """Spearman correlation of the workflow's and the peer's pseudotime per tissue."""
    from scipy.stats import spearmanr

    ours = pd.read_parquet(workdir / "results/trajectory/pseudotime.parquet").set_index("cell")
    peer = pd.read_parquet(plain_out / "pseudotime.parquet")
    both = ours[["pseudotime"]].join(peer[["pseudotime"]], rsuffix="_peer", how="inner").dropna()
    both["tissue"] = ours.loc[both.index, "tissue"]
    return {t: round(float(spearmanr(p["pseudotime"], p["pseudotime_peer"]).statistic), 3)
            for t, p in both.groupby("tissue")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="16x6000x5000",
                        help="samples x cells per sample x genes, as end_to_end.py names it")
    parser.add_argument("--repeat", type=int, default=3, help="trajectory runs (best is kept)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the workflow folder of an earlier run (its annotation)")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    shape = args.shape
    samples, cells_per_sample, genes = (int(x) for x in shape.split("x"))
    base = OUT / f"e2e_{shape}"
    load = tuple(round(x, 1) for x in os.getloadavg())
    generate(base / "data", samples, cells_per_sample, genes, seed=0)
    workdir = base / "trajectory_workflow"
    if not (args.reuse and (workdir / UPSTREAM[0]).exists()):
        make_workflow_dir(workdir, base / "data" / "samples.tsv",
                          {"demo": {"outdir": "resources/demo"}})
        print(f"upstream (QC .. annotation): {run_workflow(workdir, args.cores, UPSTREAM):.1f} s",
              flush=True)
    runs, steps = [], []
    for i in range(args.repeat):
        wall = run_workflow(workdir, args.cores, ["--forcerun", *RULES, "--", *TARGETS])
        jobs = rule_benchmarks(workdir).assign(run=i, dag_wall=wall)
        runs.append(jobs)
        steps.append(logged_steps(workdir).assign(run=i))
        print(f"run {i + 1}: {wall:.1f} s\n{jobs.to_string(index=False)}", flush=True)
    jobs = pd.concat(runs)
    best = jobs[jobs["job"] == "trajectory"].sort_values("s").iloc[0]
    peer = run_plain(workdir, base / "trajectory_plain")
    cells = peer["cells"]
    lines = [
        f"# Trajectory stage at {shape} ({cells} cells after QC); load at start {load}, "
        f"at end {tuple(round(x, 1) for x in os.getloadavg())}",
        "",
        "| job | best s | median s | max peak RSS MB |",
        "|---|---:|---:|---:|",
        *[f"| {job} | {g['s'].min():.1f} | {g['s'].median():.1f} | {g['max_rss_mb'].max():.0f} |"
          for job, g in jobs.groupby("job", sort=False)],
        "",
        "| step of the trajectory job (best run) | s |",
        "|---|---:|",
        *[f"| {r.step} | {r.s:.2f} |" for r in pd.concat(steps).query(
            f"run == {int(best['run'])}").itertuples()],
        "",
        "| | wall s | peak RSS MB |",
        "|---|---:|---:|",
        f"| rule trajectory (best of {args.repeat}) | {best['s']:.1f} | {best['max_rss_mb']:.0f} |",
        f"| plain scanpy script (one process, imports included) | {peer['process_wall']:.1f} "
        f"| {peer['max_rss_mb']:.0f} |",
        f"| **ratio rule / plain** | **{best['s'] / peer['process_wall']:.2f}x** | "
        f"**{best['max_rss_mb'] / peer['max_rss_mb']:.2f}x** |",
        "",
        "- Spearman(workflow pseudotime, plain pseudotime) per tissue: "
        f"{agreement(workdir, base / 'trajectory_plain')}",
    ]
    text = "\n".join(lines)
    (base / "trajectory_report.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--plain":
        plain_script(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main()
