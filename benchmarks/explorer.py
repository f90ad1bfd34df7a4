"""Explorer benchmark: page size and time to first render in headless Chromium.

Builds the report's explorer page (``mscflow.report.explorer.explorer_stage``) from an annotated
h5ad at several ``report.explorer_max_cells`` and opens each in headless Chromium (Debian
chromium + chromedriver, as the browser tests), measuring

* the page size and the time to build it,
* the time from navigation to the first rendered plot, and to re-colour by a gene,
* the browser's JavaScript heap after the first render,

against the peer most users reach for: ``plotly.express.scatter`` (WebGL) of the same cells
coloured by cell type, written with ``write_html(include_plotlyjs=True)`` (one colouring,
no menu).

The default input is the end-to-end benchmark's workflow run (16 samples x 6,000 cells,
``python benchmarks/end_to_end.py --samples 16 --cells 6000 --genes 5000``);
``--make`` generates that data set and runs the workflow up to the annotated cells when the
file is missing. ``--resample N`` instead draws N cells from a smaller annotated run of the
same generator, e.g. the demo (:func:`resample`: counts redrawn, scores and UMAP jittered):
the same cell types, genes and expression, at the benchmark's cell count, in minutes.
Usage::

    python benchmarks/explorer.py                      # 86k cells, explorer_max_cells 20k/50k/all
    python benchmarks/explorer.py --h5ad demo/results/annotate/annotated.h5ad --library \\
        demo/results/genesets/library.json --resample 86000

Timings depend on machine load: check ``uptime`` and rerun when the machine is quiet.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
E2E = REPO / "benchmarks" / "out" / "e2e_16x6000"
TARGETS = ["results/annotate/annotated.h5ad", "results/genesets/library.json"]


def make_inputs(samples: int, cells: int, genes: int) -> Path:
    """The end-to-end benchmark's data and its workflow run up to the annotated cells."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import end_to_end

    data = E2E / "data"
    end_to_end.generate(data, samples, cells, genes, seed=0)
    workdir = E2E / "workflow"
    if not (workdir / TARGETS[0]).exists():
        end_to_end.make_workflow_dir(workdir, data / "samples.tsv", {})
        wall = end_to_end.run_workflow(workdir, 2, TARGETS)
        print(f"workflow up to the annotated cells: {wall:.0f} s")
    return workdir


def resample(h5ad: Path, n_cells: int, out: Path, seed: int = 0) -> Path:
    """``n_cells`` cells drawn with replacement from ``h5ad``, each made a new cell: counts
    redrawn (Poisson around the source cell's counts), normalised and log1p'd again, scores
    and UMAP jittered; rows in random order (no run of copies for gzip to find)."""
    import anndata as ad
    import numpy as np
    import scanpy as sc
    import scipy.sparse as sp

    from mscflow.inputs.sample_counts import counts_matrix

    source = ad.read_h5ad(h5ad)
    if "counts" not in source.layers:  # the workflow keeps counts in results/qc/{sample}.h5ad
        qc_files = sorted(Path(h5ad).parents[1].glob("qc/*.h5ad"))
        source.layers["counts"] = counts_matrix(qc_files, source.obs_names, source.var_names)
    rng = np.random.default_rng(seed)
    rows = rng.choice(source.n_obs, size=n_cells, replace=True)
    big = source[rows].copy()
    big.obs_names = [f"{name}-{i}" for i, name in enumerate(big.obs_names)]
    counts = sp.csr_matrix(big.layers["counts"])
    counts.data = rng.poisson(counts.data).astype(np.float32)
    counts.eliminate_zeros()
    big.layers["counts"] = counts
    big.X = counts.copy()
    sc.pp.normalize_total(big, target_sum=1e4)
    sc.pp.log1p(big)
    for col in [c for c in big.obs if str(c).startswith("score_")]:
        values = big.obs[col].to_numpy(float)
        big.obs[col] = values + rng.normal(0, 0.05 * values.std(), len(values))
    umap = np.asarray(big.obsm["X_umap"], dtype=float)
    big.obsm["X_umap"] = umap + rng.normal(0, 0.005 * np.ptp(umap, axis=0), umap.shape)
    big.write_h5ad(out)
    return out


def chromium():
    """Headless Chromium through Selenium (software WebGL, no network, fresh profile)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    profile = tempfile.mkdtemp(prefix="mscflow-bench-")
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
                "--disable-dev-shm-usage", "--disable-background-networking",
                "--enable-precise-memory-info", f"--user-data-dir={profile}",
                "--window-size=1400,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(600)
    return driver, profile


RENDERED = ("const p = document.querySelector('.js-plotly-plot');"
            "return p && p._fullData && p._fullData.length > 0 ? performance.now() : null;")


def open_page(driver, path: Path, timeout: float = 600) -> dict:
    """Navigate to ``path``; time to the first plot (polled every 50 ms) and JS heap."""
    driver.get("about:blank")
    start = time.perf_counter()
    driver.get(path.resolve().as_uri())
    rendered = None
    while rendered is None and time.perf_counter() - start < timeout:
        rendered = driver.execute_script(RENDERED)
        time.sleep(0.05)
    wall = time.perf_counter() - start
    heap = driver.execute_script("return performance.memory ? performance.memory.usedJSHeapSize"
                                 " : null")
    return {"first_render_s": (rendered or float("nan")) / 1000, "wall_s": wall,
            "heap_mb": (heap or 0) / 1e6}


def recolour(driver, field: str, timeout: float = 300) -> float:
    """Seconds to re-colour the explorer by ``field`` (until its render has finished)."""
    start = time.perf_counter()
    driver.execute_script("window.explorer.show(arguments[0])", field)
    while time.perf_counter() - start < timeout:
        if driver.execute_script("return window.explorer.renderedField") == field:
            return time.perf_counter() - start
        time.sleep(0.02)
    return float("nan")


def peer_page(h5ad: Path, out: Path) -> tuple[float, int]:
    """plotly.express scatter (WebGL) of every cell coloured by cell type, as one HTML."""
    import anndata as ad
    import pandas as pd
    import plotly.express as px

    start = time.perf_counter()
    backed = ad.read_h5ad(h5ad, backed="r")
    frame = pd.DataFrame(backed.obsm["X_umap"][:, :2], columns=["umap1", "umap2"])
    frame["cell_type"] = backed.obs["cell_type"].astype(str).to_numpy()
    frame["sample"] = backed.obs["sample"].astype(str).to_numpy()
    backed.file.close()
    fig = px.scatter(frame, x="umap1", y="umap2", color="cell_type", hover_data=["sample"],
                     render_mode="webgl")
    fig.write_html(out, include_plotlyjs=True)
    return time.perf_counter() - start, len(frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--h5ad", type=Path, default=E2E / "workflow" / TARGETS[0])
    parser.add_argument("--library", type=Path, default=E2E / "workflow" / TARGETS[1])
    parser.add_argument("--max-cells", type=int, nargs="+", default=[20000, 50000, 10**9])
    parser.add_argument("--cluster-key", default="leiden_1")
    parser.add_argument("--make", action="store_true",
                        help="generate the e2e data and run the workflow if the h5ad is missing")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--cells", type=int, default=6000)
    parser.add_argument("--genes", type=int, default=5000)
    parser.add_argument("--resample", type=int, default=0,
                        help="draw this many cells from --h5ad (see the module docstring)")
    args = parser.parse_args()
    print(f"uptime: {os.popen('uptime').read().strip()}")
    out = REPO / "benchmarks" / "out" / "explorer"
    out.mkdir(parents=True, exist_ok=True)
    if args.resample:
        args.h5ad = resample(args.h5ad, args.resample, out / f"resampled_{args.resample}.h5ad")
        print(f"resampled {args.resample:,} cells into {args.h5ad}")
    if not args.h5ad.exists():
        if not args.make:
            sys.exit(f"{args.h5ad} missing: run with --make (or benchmarks/end_to_end.py first)")
        make_inputs(args.samples, args.cells, args.genes)

    from mscflow.report.explorer import explorer_stage
    from mscflow.report.overview import ReportSettings

    driver, profile = chromium()
    rows = []
    try:
        for max_cells in args.max_cells:
            settings = ReportSettings.from_config({"explorer_max_cells": max_cells}, seed=0)
            start = time.perf_counter()
            page = explorer_stage(args.h5ad, args.library, settings,
                                  cluster_key=args.cluster_key)
            build = time.perf_counter() - start
            path = out / f"explorer_{max_cells}.html"
            path.write_text(page)
            shown = int(page.split('data-shown="', 1)[1].split('"', 1)[0])
            opened = open_page(driver, path)
            gene = recolour(driver, "gene:Il10")
            rows.append({"page": f"mscflow explorer (max {max_cells:,})", "cells": shown,
                         "MB": path.stat().st_size / 1e6, "build_s": build, **opened,
                         "recolour_gene_s": gene})
        peer = out / "plotly_express.html"
        build, n = peer_page(args.h5ad, peer)
        rows.append({"page": "plotly.express scatter_gl (cell type only)", "cells": n,
                     "MB": peer.stat().st_size / 1e6, "build_s": build,
                     **open_page(driver, peer), "recolour_gene_s": float("nan")})
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    import pandas as pd

    table = pd.DataFrame(rows)
    base = table.iloc[-1]
    table["MB/peer"] = table["MB"] / base["MB"]
    table["render/peer"] = table["first_render_s"] / base["first_render_s"]
    pd.set_option("display.width", 200)
    print(table.round(2).to_string(index=False))
    print(f"uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
