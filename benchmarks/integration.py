"""Batch integration benchmark: the cluster job with Harmony, BBKNN and scVI next to the
same job without integration, on the end-to-end benchmark's data (16 samples x 6,000 cells
of the demo generator, two processing batches).

For each method the workflow's ``cluster`` rule is rerun (``--forcerun cluster``) in one
working directory whose QC ran once; wall time and peak memory come from Snakemake's
``benchmark:`` file of the job, the integration step's time from the job's log. With
``--metrics`` the integrated embedding is also scored against the planted cell types
(scaled iLISI, cell-type ASW on a 20,000-cell subset, ARI of Leiden vs truth). Usage::

    python benchmarks/integration.py                                  # 16 x 6,000 cells
    python benchmarks/integration.py --samples 8 --cells 1000 --metrics  # quick

scVI trains ``--scvi-epochs`` epochs (default 10; scvi-tools' own default at 86k cells would
be 93), and the table gives its time per epoch. Timings depend on machine load: check
``uptime`` first and rerun when the machine is quiet.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from end_to_end import (  # noqa: E402
    OUT,
    add_data_arguments,
    generate,
    make_workflow_dir,
    run_workflow,
)

METHODS = ("none", "harmony", "bbknn", "scvi")


def set_method(workdir: Path, method: str, scvi_epochs: int) -> None:
    """Write ``cluster.integration`` of the working directory's config."""
    path = workdir / "config" / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["cluster"]["integration"] = {"method": method, "scvi": {"max_epochs": scvi_epochs}}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def job_numbers(workdir: Path) -> dict:
    """Wall s and peak RSS of the last cluster job, and its logged steps."""
    bench = pd.read_csv(workdir / "benchmarks" / "cluster" / "cluster.tsv", sep="\t")
    steps = {}
    for line in (workdir / "logs" / "cluster" / "cluster.log").read_text().splitlines():
        if " step " in line and line.endswith(" s"):
            step, secs = line.split(" step ", 1)[1].rsplit(": ", 1)
            steps[step] = float(secs[:-2])
    integration = next((s for k, s in steps.items() if k.startswith("integration")), np.nan)
    return {"wall_s": float(bench["s"].iloc[0]),
            "peak_rss_mb": float(pd.to_numeric(bench["max_rss"], errors="coerce").iloc[0]),
            "integration_s": integration, "neighbours_s": steps.get("neighbours", np.nan)}


def embedding_metrics(workdir: Path, data: Path, max_cells: int = 20000) -> dict:
    """Scaled iLISI, cell-type ASW and Leiden ARI of the run's embedding vs planted types."""
    import anndata as ad
    from sklearn.metrics import adjusted_rand_score

    from mscflow.cluster import integration_metrics as im

    adata = ad.read_h5ad(workdir / "results" / "cluster" / "clustered.h5ad", backed="r")
    truth = pd.read_csv(data / "truth.tsv.gz", sep="\t")
    truth.index = truth["sample"] + ":" + truth["barcode"]
    types = truth.loc[adata.obs_names, "cell_type"].astype(str).to_numpy()
    batches = adata.obs["batch"].astype(str).to_numpy()
    info = dict(adata.uns["integration"])
    if info["graph_built"]:
        dist, idx = im.graph_knn(adata.obsp["distances"], 90)
        x = None
    else:
        x = np.asarray(adata.obsm[info["use_rep"]])
        dist, idx = im.knn_excluding_self(x, 90, n_jobs=2)
    out = {"iLISI": im.ilisi_scaled(im.lisi(dist, idx, batches, 30), len(set(batches))),
           "ARI": adjusted_rand_score(types, adata.obs["leiden_1"])}
    if x is not None:
        pick = im.silhouette_subset(len(types), max_cells, 0)
        out["celltype_ASW"] = im.celltype_asw(x[pick], types[pick])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--scvi-epochs", type=int, default=10)
    parser.add_argument("--metrics", action="store_true",
                        help="also score each embedding against the planted cell types")
    args = parser.parse_args()
    shape = f"{args.samples}x{args.cells}x{args.genes}"
    base = OUT / f"integration_{shape}"
    load = tuple(round(x, 1) for x in os.getloadavg())
    sheet = generate(base / "data", args.samples, args.cells, args.genes, args.seed)
    if "batch" not in sheet.columns:
        sys.exit(f"{base / 'data'} holds data without a batch column: delete it and rerun")
    workdir = make_workflow_dir(base / "workflow", base / "data" / "samples.tsv",
                                {"demo": {"outdir": "resources/demo"}})
    print(f"{len(sheet)} samples, batches {sorted(sheet['batch'].unique())}; load {load}",
          flush=True)
    qc_wall = run_workflow(workdir, args.cores, ["results/qc/qc_summary.tsv"])
    print(f"QC: {qc_wall:.0f} s", flush=True)
    rows = []
    for method in args.methods:
        set_method(workdir, method, args.scvi_epochs)
        start_load = round(os.getloadavg()[0], 1)
        begin = time.perf_counter()
        run_workflow(workdir, args.cores, ["--forcerun", "cluster",
                                           "results/cluster/clustered.h5ad"])
        row = {"method": method, "load_at_start": start_load,
               "snakemake_wall_s": time.perf_counter() - begin, **job_numbers(workdir)}
        if args.metrics:
            row.update(embedding_metrics(workdir, base / "data"))
        rows.append(row)
        print(row, flush=True)
    table = pd.DataFrame(rows).set_index("method")
    if "none" in table.index:
        table["wall_vs_none"] = table["wall_s"] / table.loc["none", "wall_s"]
        table["rss_vs_none"] = table["peak_rss_mb"] / table.loc["none", "peak_rss_mb"]
    if "scvi" in table.index:
        table.loc["scvi", "note"] = f"{args.scvi_epochs} epochs"
    text = (f"## Integration benchmark {shape} (load average at start {load})\n\n"
            + table.round(3).to_markdown() + "\n")
    (base / "report.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
