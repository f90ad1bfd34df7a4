"""PCA solvers of the cluster step compared (issue 20): ARPACK on the in-memory HVG matrix
(``pca_solver: arpack``, the default) against the randomised solver on blocks of cells
(``randomized_blocks``: no copy of the HVG matrix).

On the end-to-end benchmark's data (demo generator, 16 samples x 6,000 cells x 5,000 genes
by default, all cells: no QC), each solver runs in its own process after the same
normalisation and highly variable genes; printed: PCA wall time, the process's RSS before
it and its peak RSS during it (Linux: the peak is reset before the PCA), the explained
variance ratio of the components, and the agreement of the neighbour graphs' Leiden
clusters (adjusted Rand index) at the default resolution. Usage::

    python benchmarks/pca_solvers.py [--samples 16 --cells 6000 --genes 5000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from end_to_end import OUT, add_data_arguments, generate  # noqa: E402

SOLVERS = ("arpack", "randomized_blocks")


def status_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak() -> None:
    """Start a new peak RSS (Linux: writing 5 to clear_refs resets VmHWM)."""
    Path("/proc/self/clear_refs").write_text("5")


def run_solver(data: Path, solver: str, out: Path) -> None:
    """One solver in this process: merge, normalise, HVG, PCA, kNN, Leiden; save results."""
    import anndata as ad
    import pandas as pd

    from mscflow.cluster.core import (
        ClusterSettings,
        leiden,
        leiden_key,
        neighbours,
        normalise,
        pca,
    )
    from mscflow.cluster.hvg import highly_variable_genes
    from mscflow.inputs.readers import read_sample

    sheet = pd.read_csv(data / "samples.tsv", sep="\t", keep_default_na=False)
    parts = []
    for row in sheet.itertuples(index=False):
        part = read_sample(row.path, row.format, sample=row.sample, layer=row.layer or None)
        part.obs["sample"] = row.sample
        parts.append(part)
    adata = ad.concat(parts, join="inner")
    adata.obs_names_make_unique()
    del parts
    normalise(adata, 1e4)
    settings = ClusterSettings.from_config({"pca_solver": solver}, n_jobs=2, random_state=0,
                                           batch_key="sample")
    highly_variable_genes(adata, settings.n_top_genes, batch_key="sample")
    reset_peak()
    before = status_mb("VmRSS")
    start = time.perf_counter()
    pca(adata, settings, settings.n_pcs)
    seconds = time.perf_counter() - start
    pca_peak = status_mb("VmHWM")
    neighbours(adata, settings, settings.n_pcs)
    leiden(adata, settings, settings.default_resolution)
    np.savez(out, scores=adata.obsm["X_pca"], ratio=adata.uns["pca"]["variance_ratio"],
             clusters=adata.obs[leiden_key(settings.default_resolution)].astype(int).to_numpy())
    out.with_suffix(".json").write_text(json.dumps(
        {"seconds": seconds, "rss_before_mb": before, "peak_mb": pca_peak,
         "cells": adata.n_obs, "hvg": int(adata.var["highly_variable"].sum())}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--solver", choices=SOLVERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = f"{args.samples}x{args.cells}x{args.genes}"
    data = OUT / f"e2e_{shape}" / "data"
    out_dir = OUT / f"pca_solvers_{shape}"
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.solver:
        run_solver(data, args.solver, out_dir / f"{args.solver}.npz")
        return
    generate(data, args.samples, args.cells, args.genes, args.seed)
    for solver in SOLVERS:
        subprocess.run([sys.executable, __file__, "--samples", str(args.samples), "--cells",
                        str(args.cells), "--genes", str(args.genes), "--solver", solver],
                       check=True)
    from sklearn.metrics import adjusted_rand_score

    runs = {s: (np.load(out_dir / f"{s}.npz"),
                json.loads((out_dir / f"{s}.json").read_text())) for s in SOLVERS}
    (ref, ref_info), (new, _) = runs["arpack"], runs["randomized_blocks"]
    k = min(len(ref["ratio"]), len(new["ratio"]))
    corr = [abs(np.corrcoef(ref["scores"][:, i], new["scores"][:, i])[0, 1]) for i in range(k)]
    lines = [f"## PCA solvers on {ref_info['cells']:,} cells x {ref_info['hvg']} HVGs "
             f"({shape}, no QC)", "",
             "| solver | PCA s | RSS before PCA, MB | peak RSS during PCA, MB | "
             "variance explained by the PCs |", "|---|---:|---:|---:|---:|"]
    for solver, (result, info) in runs.items():
        lines.append(f"| {solver} | {info['seconds']:.1f} | {info['rss_before_mb']:,.0f} | "
                     f"{info['peak_mb']:,.0f} | {result['ratio'].sum():.4f} |")
    ratio_diff = np.abs(new["ratio"][:k] - ref["ratio"][:k]) / ref["ratio"][:k]
    lines += ["",
              f"- variance ratio, largest relative difference: PCs 1-10 "
              f"{ratio_diff[:10].max():.2e}, all {k} PCs {ratio_diff.max():.2e}",
              f"- |correlation| of the cell scores, PC by PC: PCs 1-10 min {min(corr[:10]):.4f};"
              f" all PCs median {np.median(corr):.4f}, min {min(corr):.4f}",
              f"- Leiden clusters (default resolution) from each solver's kNN graph: "
              f"{len(set(ref['clusters']))} vs {len(set(new['clusters']))}, adjusted Rand "
              f"index {adjusted_rand_score(ref['clusters'], new['clusters']):.4f}"]
    text = "\n".join(lines)
    (out_dir / "report.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
