"""Communication-stage benchmark: wall time and peak memory of liana per sample and the
interaction tests at the end-to-end benchmark's size, against the cluster job of the same
run and against liana's own ``rank_aggregate.by_sample`` on the whole object.

Generates (or reuses) the end-to-end benchmark's demo data (``end_to_end.py``: samples x
cells per sample x genes), runs the workflow up to the annotation and the score shifts with
``--cores N``, then the communication stage alone (timed), and reads every job's wall time
and peak RSS from Snakemake's ``benchmark:`` files. The peer, run in its own process on the
same annotated cells and settings: ``liana.mt.rank_aggregate.by_sample`` (the documented way
to run liana per sample), which holds the whole object in memory. Usage::

    python benchmarks/communication.py --samples 16 --cells 6000 --genes 5000
    python benchmarks/communication.py --samples 8 --cells 1000          # quick

Timings depend on machine load: the script prints the load average at start and end; rerun
when the machine is quiet.
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
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from end_to_end import OUT, generate, make_workflow_dir, run_workflow  # noqa: E402

UPSTREAM = ["results/annotate/annotated.h5ad", "results/contrasts/score_shifts.parquet"]
STAGE = ["results/communication/interactions.parquet"]


def job_benchmarks(workdir: Path) -> pd.DataFrame:
    """Per job of the communication and cluster rules: rule, wall s, peak RSS MB."""
    rows = []
    for folder, prefix in (("communication", ""), ("cluster", "")):
        for path in sorted((workdir / "benchmarks" / folder).glob(f"{prefix}*.tsv")):
            table = pd.read_csv(path, sep="\t")
            stem = path.stem
            rule = ("communication_sample" if stem.startswith("sample_") else
                    "communication_plots" if stem.startswith("plots_") else
                    "communication_contrasts" if stem == "contrasts" else stem)
            rows.append({"rule": rule, "job": stem, "s": float(table["s"].iloc[0]),
                         "max_rss_mb": float(pd.to_numeric(table["max_rss"], errors="coerce")
                                             .fillna(0).iloc[0])})
    return pd.DataFrame(rows)


def peer(h5ad: Path, out: Path, n_perms: int | None, seed: int, min_cells: int,
         expr_prop: float, exclude: list[str]) -> None:
    """liana's by-sample loop on the whole annotated object (run in its own process)."""
    import anndata as ad
    import liana

    start = time.perf_counter()
    adata = ad.read_h5ad(h5ad)
    adata = adata[~adata.obs["cell_type"].isin(exclude)].copy()
    adata.obs["sample"] = adata.obs["sample"].astype(str).astype("category")
    read = time.perf_counter() - start
    table = liana.mt.rank_aggregate.by_sample(
        adata, sample_key="sample", groupby="cell_type", resource_name="mouseconsensus",
        use_raw=False, n_perms=n_perms, seed=seed, min_cells=min_cells, expr_prop=expr_prop,
        inplace=False, verbose=False)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.write_text(json.dumps({"wall": wall, "read": read, "peak_rss_mb": peak,
                               "rows": len(table), "cells": adata.n_obs}))


def run_peer(workdir: Path, cfg: dict, out: Path) -> dict:
    """The peer with the run's settings (``cfg``: validated, defaults filled)."""
    comm = cfg["communication"]
    args = [sys.executable, __file__, "--peer", str(workdir / UPSTREAM[0]), str(out),
            json.dumps({"n_perms": comm["n_perms"], "seed": cfg["seed"],
                        "min_cells": comm["min_cells"], "expr_prop": comm["expr_prop"],
                        "exclude": comm["exclude_cell_types"]})]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"peer failed:\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text())


def report(jobs: pd.DataFrame, stage_wall: float, peer_result: dict | None, shape: str,
           loads: tuple, cells: int) -> str:
    lines = [f"## Communication benchmark {shape}: {cells:,} annotated cells "
             f"(load average at start {loads[0]}, at end {loads[1]})", "",
             "| rule | jobs | sum of job s | longest job s | max peak RSS MB |",
             "|---|---:|---:|---:|---:|"]
    for rule, part in jobs.groupby("rule", sort=False):
        lines.append(f"| {rule} | {len(part)} | {part['s'].sum():.1f} | {part['s'].max():.1f} "
                     f"| {part['max_rss_mb'].max():.0f} |")
    comm = jobs[jobs["rule"].str.startswith("communication")]
    cluster = jobs[jobs["rule"] == "cluster"]
    stage_peak = comm["max_rss_mb"].max()
    lines += ["", f"- communication stage wall time (snakemake, its jobs only): "
              f"{stage_wall:.1f} s; sum of its job times {comm['s'].sum():.1f} s"]
    if len(cluster):
        c = cluster["max_rss_mb"].max()
        lines.append(f"- peak RSS of the stage's largest job {stage_peak:.0f} MB vs the cluster "
                     f"job's {c:.0f} MB: {stage_peak / c:.2f}x")
    if peer_result:
        lines.append(f"- peer liana `rank_aggregate.by_sample` (one process, whole object, "
                     f"{peer_result['cells']:,} cells): {peer_result['wall']:.1f} s wall, "
                     f"{peer_result['peak_rss_mb']:.0f} MB peak RSS; ours: "
                     f"{comm['s'].sum() / peer_result['wall']:.2f}x its time summed over jobs, "
                     f"{stage_wall / peer_result['wall']:.2f}x in wall time with the cores, "
                     f"{stage_peak / peer_result['peak_rss_mb']:.2f}x its peak memory")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    shape_options = {"samples": (16, "samples (a multiple of 4)"),
                     "cells": (6000, "cells per sample before QC"), "genes": (5000, "genes"),
                     "seed": (0, "seed of the demo generator"), "cores": (2, "snakemake cores")}
    for name, (default, text) in shape_options.items():
        parser.add_argument(f"--{name}", type=int, default=default, help=text)
    parser.add_argument("--skip-peer", action="store_true", help="do not run the peer")
    args = parser.parse_args()
    shape = f"{args.samples}x{args.cells}x{args.genes}"
    base = OUT / f"communication_{shape}"
    generate(OUT / f"e2e_{shape}" / "data", args.samples, args.cells, args.genes, args.seed)
    sheet = OUT / f"e2e_{shape}" / "data" / "samples.tsv"
    workdir = base / "workflow"
    if not (workdir / UPSTREAM[1]).exists():
        make_workflow_dir(workdir, sheet, {"demo": {"outdir": "resources/demo"}})
        print(f"upstream: {run_workflow(workdir, args.cores, UPSTREAM):.1f} s", flush=True)
    for old in (workdir / "results" / "communication", workdir / "benchmarks" / "communication"):
        if old.exists():
            subprocess.run(["rm", "-r", str(old)], check=True)
    load_start = round(os.getloadavg()[0], 1)
    stage_wall = run_workflow(workdir, args.cores, STAGE)
    print(f"communication stage: {stage_wall:.1f} s", flush=True)
    from mscflow.config import validate_config

    cfg = validate_config(yaml.safe_load((workdir / "config" / "config.yaml").read_text()))
    peer_result = None if args.skip_peer else run_peer(workdir, cfg, base / "peer.json")
    import anndata as ad

    cells = ad.read_h5ad(workdir / UPSTREAM[0], backed="r").n_obs
    text = report(job_benchmarks(workdir), stage_wall, peer_result, shape,
                  (load_start, round(os.getloadavg()[0], 1)), cells)
    (base / "report.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--peer":
        opts = json.loads(sys.argv[4])
        peer(Path(sys.argv[2]), Path(sys.argv[3]), opts["n_perms"], opts["seed"],
             opts["min_cells"], opts["expr_prop"], opts["exclude"])
    else:
        main()
