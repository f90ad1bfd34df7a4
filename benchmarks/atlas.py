"""Atlas-scale benchmark (issue 20): the workflow on a synthetic data set of a given size,
per-rule wall time and peak memory, and, where it fits, the plain scanpy script of
``end_to_end.py`` in the same run for the ratio.

The data come from the demo generator (``end_to_end.generate``: planted cell types,
doublets, programme shifts; samples x cells per sample x genes), the workflow runs up to the
steps the plain script also does (QC + doublets per sample, merge .. UMAP + markers,
programme scores; ``--whole-dag`` for every rule) with ``--cores``; every job's wall time and
peak RSS come from Snakemake's ``benchmark:`` files. The plain script runs only when
``samples x cells <= --plain-max-cells`` (default 300,000: it holds every cell's counts and
normalised matrix in one process). Usage::

    python benchmarks/atlas.py --samples 16 --cells 15625          # 250,000 cells
    python benchmarks/atlas.py --samples 64 --cells 15625 --genes 5000   # 1,000,000 cells
    python benchmarks/atlas.py --samples 4 --cells 500 --genes 2000      # quick check

Prints the table (markdown) and writes it to ``benchmarks/out/atlas_<shape>/report.md``.
Timings depend on machine load: check ``uptime`` first and rerun when the machine is quiet.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from end_to_end import (  # noqa: E402
    OUT,
    SAME_STEPS,
    SAME_TARGETS,
    add_data_arguments,
    compare,
    generate,
    logged_steps,
    make_workflow_dir,
    rule_table,
    run_plain,
    run_workflow,
    workflow_benchmarks,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_arguments(parser)
    parser.set_defaults(samples=16, cells=15_625)
    parser.add_argument("--plain-max-cells", type=int, default=300_000,
                        help="run the plain scanpy script up to this many cells")
    parser.add_argument("--whole-dag", action="store_true",
                        help="every rule (annotation, contrasts, report), not only the steps "
                             "the plain script does")
    parser.add_argument("--tile", type=int, default=1,
                        help="use K times the generated samples: copies 2..K of every sample "
                             "with each count redrawn from a Poisson around it (new cells of "
                             "the same types; faster than generating K times the samples)")
    args = parser.parse_args()
    shape = f"{args.samples}x{args.cells}x{args.genes}"
    cells = args.samples * args.cells * args.tile
    load = tuple(round(x, 1) for x in os.getloadavg())
    begin = time.perf_counter()
    generate(OUT / f"atlas_{shape}" / "data", args.samples, args.cells, args.genes, args.seed)
    sheet_path = OUT / f"atlas_{shape}" / "data" / "samples.tsv"
    base = OUT / f"atlas_{shape}"
    if args.tile > 1:
        base = OUT / f"atlas_{shape}_tile{args.tile}"
        sheet_path = tile_samples(sheet_path, base / "data", args.tile, args.seed)
        shape += f" x{args.tile} (tiled)"
    print(f"data: {cells:,} cells in {time.perf_counter() - begin:.0f} s", flush=True)
    workdir = make_workflow_dir(base / "workflow", sheet_path,
                                {"demo": {"outdir": "resources/demo"}})
    cfg_path = workdir / "config" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    wf_wall = run_workflow(workdir, args.cores, [] if args.whole_dag else SAME_TARGETS)
    bench = workflow_benchmarks(workdir)
    print(f"workflow: {wf_wall:.1f} s", flush=True)
    lines = [f"## Atlas benchmark {shape}: {cells:,} cells before QC, --cores {args.cores} "
             f"(load average at start {load}, at end "
             f"{tuple(round(x, 1) for x in os.getloadavg())})", "",
             *rule_table(bench), "",
             "| step inside a job | jobs | sum s | longest s | job peak RSS after it, MB |",
             "|---|---:|---:|---:|---:|",
             *[f"| {r.rule}: {r.step} | {r.jobs} | {r.sum_s:.1f} | {r.max_s:.1f} | "
               f"{r.peak_rss_mb:,.0f} |" for r in logged_steps(workdir).itertuples()], "",
             f"- workflow wall time: {wf_wall:.1f} s; largest job peak "
             f"{bench.max_rss_mb.max():,.0f} MB ({bench.loc[bench.max_rss_mb.idxmax(), 'job']})"]
    if cells <= args.plain_max_cells:
        plain_out = base / "plain"
        plain_wall = run_plain(sheet_path, cfg_path, plain_out)
        plain_steps = pd.read_csv(plain_out / "steps.tsv", sep="\t")
        plain_peak = plain_steps.peak_rss_mb.max()
        same = bench[bench.rule.isin(SAME_STEPS)]
        lines += [f"- plain scanpy script: {plain_wall:.1f} s, peak {plain_peak:,.0f} MB",
                  f"- **ratio workflow / plain: wall {wf_wall / plain_wall:.2f}x, peak memory "
                  f"{same.max_rss_mb.max() / plain_peak:.2f}x**", "",
                  "| plain script step | s | running peak RSS MB |", "|---|---:|---:|",
                  *[f"| {r.step} | {r.s:.1f} | {r.peak_rss_mb:.0f} |"
                    for r in plain_steps.itertuples()], "",
                  *[f"- {k}: {v if not isinstance(v, float) else round(v, 4)}"
                    for k, v in compare(workdir, plain_out, base / "data", cfg).items()]]
    else:
        lines.append(f"- plain script not run: {cells:,} cells > --plain-max-cells "
                     f"{args.plain_max_cells:,}")
    text = "\n".join(lines)
    (base / "report.md").write_text(text + "\n")
    print(text)


def tile_samples(sheet_path: Path, out: Path, tile: int, seed: int) -> Path:
    """A sample sheet of ``tile`` x the samples of ``sheet_path``: the originals, and copies
    ``_t2`` .. ``_t<tile>`` written as 10x h5 with every stored count redrawn from a Poisson
    around it (zeros dropped; replicates renumbered after the originals'). Written once."""
    import numpy as np

    from mscflow.demo.formats import write_10x_h5
    from mscflow.inputs.readers import read_sample

    target = out / "samples.tsv"
    if target.exists():
        return target
    out.mkdir(parents=True, exist_ok=True)
    sheet = pd.read_csv(sheet_path, sep="\t", keep_default_na=False)
    rng = np.random.default_rng(seed)
    rows = [sheet]
    n_reps = int(sheet["replicate"].max())
    for k in range(2, tile + 1):
        copies = []
        for row in sheet.itertuples(index=False):
            adata = read_sample(row.path, row.format, sample=row.sample, layer=row.layer or None)
            counts = adata.X.tocsr()
            counts.data = rng.poisson(counts.data).astype(np.float32)
            counts.eliminate_zeros()
            name = f"{row.sample}_t{k}"
            path = out / f"{name}_filtered_feature_bc_matrix.h5"
            write_10x_h5(path, counts, list(adata.obs_names), list(adata.var_names))
            copies.append({**row._asdict(), "sample": name, "path": str(path),
                           "format": "10x_h5", "layer": "",
                           "replicate": row.replicate + (k - 1) * n_reps})
        rows.append(pd.DataFrame(copies))
    pd.concat(rows, ignore_index=True).to_csv(target, sep="\t", index=False)
    return target


if __name__ == "__main__":
    main()
