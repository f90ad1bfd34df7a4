"""Benchmark: one CELLxGENE-shaped file holding 16 samples (>= 200k cells) through
``mscflow samplesheet`` and the workflow's per-sample QC jobs, against the same jobs reading
each sample from its own file.

A script, not a test::

    python benchmarks/public_data.py                      # 16 samples x 12,500 cells
    python benchmarks/public_data.py --cells-per-sample 2000 --samples 4   # a quick look

The shared file is generated here (not kept in the repository), from the real Tabula Muris
lung channel in the CELLxGENE layout of tests/data/public/tm_lung_cellxgene.h5ad: each cell
is a channel cell, drawn at random, its counts binomially thinned (p ~ U(0.5, 1), seeded);
Ensembl ids as var_names, ``feature_name`` symbols, log-normalised ``X`` on every gene,
counts in ``.raw.X``, ``donor_id`` interleaved at random (every sample's cells are spread
over the whole file, the hardest case for reading one sample). The per-sample files hold
the same cells in the same layout, one sample each.

Both runs are the workflow's ``qc_sample`` jobs (``snakemake --cores 2``), one sheet with
``obs_filter`` on the shared file, one with a file per sample. Peak memory per job is the
job process's VmHWM, recorded at exit by a ``sitecustomize`` hook this script puts on
PYTHONPATH (exact; Snakemake's own benchmark polls RSS every 30 s after the first 30 s, so
it can miss the peak: its ``max_rss`` is printed beside it). Check that the machine is quiet
first (the script prints ``uptime``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
import yaml

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "tests" / "data" / "public" / "tm_lung_cellxgene.h5ad"
BLOCK_CELLS = 10_000

SITECUSTOMIZE = textwrap.dedent('''
    """Benchmark hook: record the peak RSS (VmHWM) of every Snakemake script job at exit."""
    import atexit, os, sys

    def _record():
        smk = getattr(sys.modules.get("__main__"), "snakemake", None)
        if smk is None:
            return
        with open("/proc/self/status") as status:
            kb = next(line.split()[1] for line in status if line.startswith("VmHWM"))
        name = "_".join([smk.rule, *map(str, smk.wildcards)])
        with open(os.path.join(os.environ["MSCFLOW_BENCH_PEAKS"], name), "w") as out:
            out.write(kb)

    if os.environ.get("MSCFLOW_BENCH_PEAKS"):
        atexit.register(_record)
''')


# ----------------------------------------------------------------------------- data
class CsrWriter:
    """Appends row blocks to the (empty, right-shaped) CSR matrices ``raw/X`` and ``X`` of
    an h5ad written by :func:`_write_layout`; memory: one block."""

    KEYS = ("raw/X", "X")

    def __init__(self, path: Path) -> None:
        self.handle = h5py.File(path, "r+")
        self.parts: dict[str, tuple[h5py.Dataset, h5py.Dataset, list[np.ndarray]]] = {}
        for key in self.KEYS:
            group = self.handle[key]
            for name in ("data", "indices", "indptr"):
                del group[name]
            data = group.create_dataset("data", shape=(0,), maxshape=(None,),
                                        dtype=np.float32, chunks=(1 << 18,))
            indices = group.create_dataset("indices", shape=(0,), maxshape=(None,),
                                           dtype=np.int32, chunks=(1 << 18,))
            self.parts[key] = (data, indices, [np.zeros(1, dtype=np.int64)])

    def append(self, *blocks: sp.csr_matrix) -> None:
        for key, block in zip(self.KEYS, blocks, strict=True):
            data, indices, indptr = self.parts[key]
            start = data.shape[0]
            for dataset, values in ((data, block.data), (indices, block.indices)):
                dataset.resize((start + len(values),))
                dataset[start:] = values
            indptr.append(block.indptr[1:] + indptr[-1][-1])

    def close(self) -> None:
        for key, (_, _, indptr) in self.parts.items():
            group = self.handle[key]
            pointers = np.concatenate(indptr)
            group.create_dataset("indptr", data=pointers)
            group.attrs["shape"] = np.array([len(pointers) - 1, group.attrs["shape"][1]])
        self.handle.close()


def _write_layout(path: Path, obs: pd.DataFrame, var: pd.DataFrame) -> None:
    """An h5ad with obs, var, and empty X and .raw.X of the right shape."""
    empty = sp.csr_matrix((len(obs), len(var)), dtype=np.float32)
    adata = ad.AnnData(empty, obs=obs, var=var)
    adata.raw = ad.AnnData(empty.copy(), obs=obs, var=pd.DataFrame(index=var.index))
    adata.write_h5ad(path)


def _log_normalised(counts: sp.csr_matrix) -> sp.csr_matrix:
    totals = np.asarray(counts.sum(axis=1)).ravel()
    out = sp.csr_matrix(sp.diags(1e4 / np.maximum(totals, 1)) @ counts, dtype=np.float32)
    out.data = np.log1p(out.data)
    return out


def generate(out: Path, n_samples: int, cells_per_sample: int, seed: int = 0
             ) -> tuple[Path, dict[str, Path]]:
    """Write the shared file and one file per sample (the same cells, the same layout)."""
    template = ad.read_h5ad(TEMPLATE)
    counts = sp.csr_matrix(template.raw.X, dtype=np.float32)
    labels = template.obs["cell_type"].astype(str).to_numpy()
    var = pd.DataFrame({"feature_name": template.var["feature_name"].astype(str)},
                       index=template.var_names)
    rng = np.random.default_rng(seed)
    n_cells = n_samples * cells_per_sample
    names = [f"donor_{i + 1:02d}" for i in range(n_samples)]
    donors = np.repeat(names, cells_per_sample)[rng.permutation(n_cells)]
    source = rng.integers(0, counts.shape[0], n_cells)
    keep = rng.uniform(0.5, 1.0, n_cells)
    obs = pd.DataFrame({
        "donor_id": pd.Categorical(donors, categories=names),
        "condition": pd.Categorical(np.where(
            np.isin(donors, names[::2]), "control", "pseudo_treated")),
        "tissue": pd.Categorical(["lung"] * n_cells),
        "cell_type": pd.Categorical(labels[source]),
    }, index=[f"cell{i:07d}" for i in range(n_cells)])
    out.mkdir(parents=True, exist_ok=True)
    paths = {"shared": out / "study_cellxgene.h5ad"} | {d: out / f"{d}.h5ad" for d in names}
    _write_layout(paths["shared"], obs, var)
    for donor in names:
        _write_layout(paths[donor], obs[donors == donor], var)
    writers = {key: CsrWriter(path) for key, path in paths.items()}
    for start in range(0, n_cells, BLOCK_CELLS):
        rows = np.arange(start, min(start + BLOCK_CELLS, n_cells))
        block = counts[source[rows]].tocoo()
        thinned = rng.binomial(block.data.astype(np.int64), keep[rows][block.row])
        raw = sp.csr_matrix((thinned.astype(np.float32), (block.row, block.col)),
                            shape=block.shape)
        raw.eliminate_zeros()
        x = _log_normalised(raw)
        writers["shared"].append(raw, x)
        for donor in names:
            mine = donors[rows] == donor
            writers[donor].append(raw[mine], x[mine])
    for writer in writers.values():
        writer.close()
    return paths.pop("shared"), paths


# ----------------------------------------------------------------------------- runs
def make_workdir(path: Path, sheet: pd.DataFrame) -> Path:
    """A working directory with the repository's config (no contrasts) and this sheet."""
    if path.exists():
        shutil.rmtree(path)
    shutil.copytree(REPO / "config", path / "config")
    for sub in ("genesets", "orthologs"):
        shutil.copytree(REPO / "resources" / sub, path / "resources" / sub)
    config = yaml.safe_load((path / "config" / "config.yaml").read_text())
    config["contrasts"] = []
    (path / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    sheet.to_csv(path / "config" / "samples.tsv", sep="\t", index=False)
    return path


def run_qc_jobs(workdir: Path, samples: list[str], hook: Path) -> float:
    """The workflow's qc_sample jobs of ``samples``; returns the wall time in seconds."""
    peaks = workdir / "peaks"
    peaks.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": f"{hook}:{os.environ.get('PYTHONPATH', '')}",
           "MSCFLOW_BENCH_PEAKS": str(peaks),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    targets = [f"results/qc/{s}.h5ad" for s in samples]
    begin = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
                           "-d", str(workdir), "--cores", "2", *targets],
                          capture_output=True, text=True, env=env)
    (workdir / "snakemake.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"snakemake failed in {workdir}:\n{proc.stderr[-3000:]}")
    return time.monotonic() - begin


def job_table(workdir: Path, samples: list[str]) -> pd.DataFrame:
    """Per job: peak RSS (VmHWM, MB), Snakemake's max_rss (MB), wall and read seconds, and
    the memory the job asked for (mem_mb, from Snakemake's log of the run)."""
    asked = dict(re.findall(r"wildcards: sample=(\S+)\n\s+resources: .*?mem_mb=(\d+)",
                            (workdir / "snakemake.log").read_text()))
    rows = []
    for sample in samples:
        bench = pd.read_csv(workdir / "benchmarks" / "qc" / f"{sample}.tsv", sep="\t")
        log = (workdir / "logs" / "qc" / f"{sample}.log").read_text()
        read = re.search(r"step read: ([\d.]+) s", log)
        cells = re.search(r"read \S+: (\d+) cells", log)
        rows.append({
            "sample": sample, "cells": int(cells.group(1)) if cells else np.nan,
            "peak_mb": int((workdir / "peaks" / f"qc_sample_{sample}").read_text()) / 1024,
            "snakemake_max_rss_mb": bench["max_rss"].iloc[0], "job_s": bench["s"].iloc[0],
            "read_s": float(read.group(1)) if read else np.nan,
            "mem_mb_asked": int(asked[sample]) if sample in asked else np.nan,
        })
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--cells-per-sample", type=int, default=12_500)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "public_data")
    parser.add_argument("--reuse", action="store_true", help="keep generated files")
    args = parser.parse_args()
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    data = args.out / "data"
    shared = data / "study_cellxgene.h5ad"
    begin = time.monotonic()
    if args.reuse and shared.exists():
        own = {p.stem: p for p in sorted(data.glob("donor_*.h5ad"))}
    else:
        shared, own = generate(data, args.samples, args.cells_per_sample)
    print(f"data: {args.samples} samples x {args.cells_per_sample:,} cells "
          f"({time.monotonic() - begin:.0f} s); shared file {shared.stat().st_size / 1e9:.2f} GB,"
          f" per-sample files {sum(p.stat().st_size for p in own.values()) / 1e9:.2f} GB")
    sheet_path = args.out / "samples_shared.tsv"
    begin = time.monotonic()
    subprocess.run([str(Path(sys.executable).parent / "mscflow"), "samplesheet", str(shared),
                    "--sample-key", "donor_id", "--condition-key", "condition",
                    "--tissue-key", "tissue", "--layer", "raw", "--var-symbols", "feature_name",
                    "--keep-obs", "cell_type", "-o", str(sheet_path)], check=True)
    print(f"mscflow samplesheet: {time.monotonic() - begin:.1f} s")
    sheet = pd.read_csv(sheet_path, sep="\t", dtype=str, keep_default_na=False)
    own_sheet = sheet.assign(path=sheet["sample"].map(lambda s: str(own[s])), obs_filter="")
    hook = args.out / "hook"
    hook.mkdir(parents=True, exist_ok=True)
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    samples = sheet["sample"].tolist()
    tables = {}
    for name, table in (("shared", sheet), ("own", own_sheet)):
        workdir = make_workdir(args.out / f"run_{name}", table)
        wall = run_qc_jobs(workdir, samples, hook)
        tables[name] = job_table(workdir, samples)
        print(f"run {name}: {len(samples)} qc_sample jobs in {wall:.0f} s (2 cores)")
    both = tables["shared"].merge(tables["own"], on=["sample", "cells"],
                                  suffixes=("_shared", "_own"))
    both["peak_ratio"] = both["peak_mb_shared"] / both["peak_mb_own"]
    pd.set_option("display.width", 200)
    print(both.round(2).to_string(index=False))
    size_mb = shared.stat().st_size / 1024**2
    print(f"peak memory of a job on the shared file / on its own file: median "
          f"{both['peak_ratio'].median():.2f}x, max {both['peak_ratio'].max():.2f}x (target "
          f"<= 2x); peak {both['peak_mb_shared'].max():.0f} MB vs "
          f"{both['peak_mb_own'].max():.0f} MB")
    print(f"read step: median {both['read_s_shared'].median():.1f} s (shared) vs "
          f"{both['read_s_own'].median():.1f} s (own)")
    print(f"qc_sample's mem_mb request: median {both['mem_mb_asked_shared'].median():,.0f} MB "
          f"on the shared {size_mb:,.0f} MB file (each job reads its donor's rows), "
          f"{both['mem_mb_asked_own'].median():,.0f} MB on its own file")


if __name__ == "__main__":
    main()
