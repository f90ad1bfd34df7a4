"""Benchmark mscflow.scoring.core against scanpy / decoupler / pyUCell, X @ W and a streaming read.

A script, not a test.  Example (small):

    python benchmarks/bench_scoring.py --cells 20000 --sets 1 20 --peer-cells 5000

Full run of the issue: ``--cells 20000 100000 500000 --sets 1 20 200`` (the default), plus
``--ooc-cells 1000000`` for the out-of-core mode (writes ~8 GB under benchmarks/out/ and
deletes it afterwards).  Peers are run on at most ``--peer-cells`` cells and ``--peer-sets``
sets and extrapolated linearly; extrapolated numbers are marked with ``*``.  Memory is the
peak RSS above the pre-call RSS (Linux ``clear_refs``/``VmHWM``), in MB.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numba as nb
import numpy as np
import pandas as pd
import scipy.sparse as sp

OUT = Path(__file__).resolve().parent / "out"


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------


def make_csr(n_cells: int, n_genes: int, density: float, seed: int = 0) -> sp.csr_matrix:
    """Log-normalised-like float32 CSR, sorted indices, skewed gene detection rates."""
    rng = np.random.default_rng(seed)
    k = max(1, int(round(density * n_genes * 1.035)))  # ~3% of draws are duplicates
    popularity = rng.permutation(n_genes)
    step = max(1, 4_000_000 // k)
    indices, counts = [], []
    for a in range(0, n_cells, step):
        b = min(a + step, n_cells)
        u = rng.random((b - a, k), dtype=np.float32)
        idx = popularity[np.minimum((u**1.6 * n_genes).astype(np.int64), n_genes - 1)]
        idx = idx.astype(np.int32)
        idx.sort(axis=1)
        keep = np.ones(idx.shape, dtype=bool)
        keep[:, 1:] = idx[:, 1:] != idx[:, :-1]
        indices.append(idx[keep])
        counts.append(keep.sum(1))
    ind = np.concatenate(indices)
    indptr = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(np.concatenate(counts), out=indptr[1:])
    if indptr[-1] < 2**31:
        indptr = indptr.astype(np.int32)
    data = np.log1p(rng.gamma(1.2, 1.5, size=len(ind)).astype(np.float32) + 0.5)
    return sp.csr_matrix((data.astype(np.float32), ind, indptr), shape=(n_cells, n_genes))


def make_sets(n_sets: int, genes: pd.Index, size: int = 30, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    return {f"set{i}": list(rng.choice(genes, size, replace=False)) for i in range(n_sets)}


# ---------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def measure(fn: Callable[[], object], repeat: int = 1) -> tuple[float, float]:
    """Best wall time (s) over ``repeat`` runs and peak extra RSS (MB) of the first run."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM
    except OSError:
        pass
    base = _rss_kb("VmRSS:")
    best = np.inf
    for i in range(repeat):
        t = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t)
        if i == 0:
            peak = (_rss_kb("VmHWM:") - base) / 1024
        del res
    return best, max(peak, 0.0)


@nb.njit(parallel=True, cache=True)
def streaming_read(data, indices, indptr):
    """One pass over the CSR data and indices: the physical floor of any scoring kernel."""
    n = indptr.shape[0] - 1
    acc = np.zeros(n)
    for r in nb.prange(n):
        s = 0.0
        t = 0
        for k in range(indptr[r], indptr[r + 1]):
            s += data[k]
            t += indices[k]
        acc[r] = s + t
    return acc


def set_matrix(sets: dict, genes: pd.Index) -> np.ndarray:
    w = np.zeros((len(genes), len(sets)))
    for j, members in enumerate(sets.values()):
        w[genes.get_indexer(members), j] = 1.0 / len(members)
    return w


# ---------------------------------------------------------------------------------------
# Peers
# ---------------------------------------------------------------------------------------


def peer_scanpy(x, genes, sets):
    import anndata as ad
    import scanpy as sc

    a = ad.AnnData(x)
    a.var_names = genes
    for name, members in sets.items():
        sc.tl.score_genes(a, members, score_name=name, random_state=0)
    return a.obs


def _net(sets):
    return pd.DataFrame(
        [(k, g, 1.0) for k, v in sets.items() for g in v], columns=["source", "target", "weight"]
    )


def peer_decoupler(method: str):
    def run(x, genes, sets):
        import anndata as ad
        import decoupler as dc

        a = ad.AnnData(x)
        a.var_names = genes
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            getattr(dc.mt, method)(a, _net(sets), tmin=1)
        return a.obsm

    return run


def peer_pyucell(x, genes, sets):
    import anndata as ad
    import pyucell

    a = ad.AnnData(x)
    a.var_names = genes
    pyucell.compute_ucell_scores(a, sets, n_jobs=2)
    return a.obs


PEERS = {
    "scanpy.score_genes loop": peer_scanpy,
    "decoupler ulm": peer_decoupler("ulm"),
    "decoupler aucell": peer_decoupler("aucell"),
    "pyUCell": peer_pyucell,
}


# ---------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------


def bench_in_memory(args) -> pd.DataFrame:
    from mscflow.scoring.core import score_gene_sets

    rows = []
    for n_cells in args.cells:
        t0 = time.perf_counter()
        x = make_csr(n_cells, args.genes, args.density)
        mat_mb = (x.data.nbytes + x.indices.nbytes + x.indptr.nbytes) / 2**20
        genes = pd.Index([f"G{i}" for i in range(args.genes)])
        print(
            f"# {n_cells} cells x {args.genes} genes, nnz {x.nnz:,} ({mat_mb:.0f} MB), "
            f"generated in {time.perf_counter() - t0:.1f}s",
            flush=True,
        )
        floor, _ = measure(lambda x=x: streaming_read(x.data, x.indices, x.indptr), 5)
        for n_sets in args.sets:
            sets = make_sets(n_sets, genes)
            row = {"cells": n_cells, "sets": n_sets, "matrix_MB": round(mat_mb)}

            def add(name, t, mem, extrap=False, row=row, floor=floor):
                row[f"{name} s"] = f"{t:.3f}{'*' if extrap else ''}"
                row[f"{name} MB"] = f"{mem:.0f}{'*' if extrap else ''}"
                row[f"{name} x_floor"] = round(t / floor, 1)

            row["floor s"] = round(floor, 3)
            w = set_matrix(sets, genes)
            t, m = measure(lambda x=x, w=w: x @ w, 2)
            add("X@W", t, m)
            for method in args.methods:
                def ours(x=x, sets=sets, method=method, genes=genes):
                    return score_gene_sets(x, sets, method, var_names=genes, n_threads=args.threads)

                ours(x[:200])  # compile / load the cached kernels outside the timing
                t, m = measure(ours, args.repeat)
                add(f"ours {method}", t, m)
            for peer in args.peers:
                fn = PEERS[peer]
                sub_c = min(n_cells, args.peer_cells)
                sub_s = min(n_sets, args.peer_sets)
                sub_sets = dict(list(sets.items())[:sub_s])
                xs = x[:sub_c]
                try:
                    fn(x[:300], genes, sub_sets)  # warm up the peer's own JIT / imports
                    t, m = measure(lambda fn=fn, xs=xs, s=sub_sets, g=genes: fn(xs, g, s))
                except Exception as e:  # noqa: BLE001 - report and carry on
                    print(f"# {peer} failed: {type(e).__name__}: {e}", flush=True)
                    continue
                scale_c = n_cells / sub_c
                scale_s = n_sets / sub_s if peer == "scanpy.score_genes loop" else 1.0
                add(peer, t * scale_c * scale_s, m * scale_c, extrap=scale_c * scale_s > 1)
            rows.append(row)
            print(pd.Series(row).to_string(), flush=True)
        del x
        gc.collect()
    return pd.DataFrame(rows)


def write_big_h5ad(path: Path, n_cells: int, n_genes: int, per_cell: int, chunk: int) -> None:
    """Write a CSR h5ad chunk by chunk (never holding the whole matrix in memory)."""
    import anndata as ad
    import h5py

    genes = pd.Index([f"G{i}" for i in range(n_genes)])
    ad.AnnData(
        obs=pd.DataFrame(index=[f"c{i}" for i in range(n_cells)]), var=pd.DataFrame(index=genes)
    ).write_h5ad(path)
    with h5py.File(path, "a") as f:
        g = f.create_group("X")
        g.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0"})
        g.attrs["shape"] = (n_cells, n_genes)
        d = g.create_dataset("data", (0,), "float32", maxshape=(None,), chunks=(1 << 20,))
        ix = g.create_dataset("indices", (0,), "int32", maxshape=(None,), chunks=(1 << 20,))
        ptr = np.zeros(n_cells + 1, dtype=np.int64)
        for a in range(0, n_cells, chunk):
            b = min(a + chunk, n_cells)
            c = make_csr(b - a, n_genes, per_cell / n_genes, seed=a)
            n0 = d.shape[0]
            d.resize((n0 + c.nnz,))
            ix.resize((n0 + c.nnz,))
            d[n0:] = c.data
            ix[n0:] = c.indices
            ptr[a + 1 : b + 1] = n0 + c.indptr[1:]
        g.create_dataset("indptr", data=ptr)


def bench_out_of_core(args) -> None:
    import anndata as ad

    from mscflow.scoring.core import score_gene_sets

    OUT.mkdir(exist_ok=True)
    path = OUT / f"ooc_{args.ooc_cells}.h5ad"
    try:
        t = time.perf_counter()
        write_big_h5ad(path, args.ooc_cells, args.genes, args.ooc_per_cell, 50_000)
        size_gb = path.stat().st_size / 2**30
        print(f"# wrote {path.name}: {size_gb:.1f} GB in {time.perf_counter() - t:.0f}s")
        genes = pd.Index([f"G{i}" for i in range(args.genes)])
        sets = make_sets(20, genes)
        for method in args.methods:
            a = ad.read_h5ad(path, backed="r")
            t, m = measure(
                lambda a=a, method=method: score_gene_sets(
                    a, sets, method, n_threads=args.threads, chunk_size=args.ooc_chunk
                )
            )
            a.file.close()
            print(
                f"out-of-core {method}: {t:.1f}s, peak extra RSS {m:.0f} MB, process peak RSS "
                f"{_rss_kb('VmHWM:') / 1024:.0f} MB (file {size_gb:.1f} GB)",
                flush=True,
            )
    finally:
        path.unlink(missing_ok=True)


MEM_CHILD = """
import gc, sys, time, tracemalloc
sys.path.insert(0, {bench_dir!r})
import numpy as np, pandas as pd
import bench_scoring as B
from mscflow.scoring.core import score_gene_sets
n_cells, n_genes, density, n_sets, method, threads = {params!r}
genes = pd.Index([f"G{{i}}" for i in range(n_genes)])
sets = B.make_sets(n_sets, genes)
x = B.make_csr(n_cells, n_genes, density)
score_gene_sets(x[:200], sets, method, var_names=genes, n_threads=threads)  # load the JIT
gc.collect()
mat_mb = (x.data.nbytes + x.indices.nbytes + x.indptr.nbytes) / 2**20
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = B._rss_kb("VmRSS:")
tracemalloc.start()
t = time.perf_counter()
res = score_gene_sets(x, sets, method, var_names=genes, n_threads=threads)
t = time.perf_counter() - t
_, py_peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
rss = (B._rss_kb("VmHWM:") - base) / 1024
print(mat_mb, py_peak / 2**20, rss, t)
"""


def bench_memory(args) -> None:
    """Extra memory per method in a fresh process: tracemalloc peak and peak RSS growth.

    tracemalloc sees numpy allocations made from Python; numba's NRT arrays (the kernels'
    per-block scratch) are only visible in the RSS, which is measured as ``VmHWM`` minus the
    RSS after the matrix was built and the kernels were loaded.
    """
    bench_dir = str(Path(__file__).resolve().parent)
    for n_cells in args.cells:
        for n_sets in args.sets:
            for method in args.methods:
                params = (n_cells, args.genes, args.density, n_sets, method, args.threads)
                code = MEM_CHILD.format(bench_dir=bench_dir, params=params)
                out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                     text=True, check=True)
                mat_mb, py_mb, rss_mb, t = map(float, out.stdout.split()[-4:])
                print(
                    f"memory {n_cells} cells x {n_sets} sets, {method}: matrix {mat_mb:.0f} MB, "
                    f"tracemalloc peak {py_mb:.1f} MB ({100 * py_mb / mat_mb:.1f}%), "
                    f"peak RSS growth {rss_mb:.1f} MB ({100 * rss_mb / mat_mb:.1f}%), {t:.2f}s",
                    flush=True,
                )


def bench_jit() -> None:
    """Time the first call in a fresh process with an empty vs a warm numba cache."""
    code = (
        "import time,numpy as np,scipy.sparse as sp;t=time.perf_counter();"
        "from mscflow.scoring.core import score_gene_sets as f;"
        "x=sp.random(200,300,density=.1,format='csr',dtype=np.float32,random_state=0);"
        "g=[f'G{i}' for i in range(300)];s={'a':g[:20]};"
        "[f(x,s,m,var_names=g) for m in ('scanpy','aucell','mean','zscore')];"
        "print(time.perf_counter()-t)"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ("cold (empty numba cache)", "warm (cached JIT)"):
            t = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                 text=True, check=True)
            total = time.perf_counter() - t
            print(f"jit {label}: import+first calls {float(out.stdout):.1f}s, process {total:.1f}s")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cells", type=int, nargs="*", default=[20_000, 100_000, 500_000])
    p.add_argument("--genes", type=int, default=20_000)
    p.add_argument("--density", type=float, default=0.07)
    p.add_argument("--sets", type=int, nargs="+", default=[1, 20, 200])
    p.add_argument("--methods", nargs="+", default=["scanpy", "aucell", "mean", "zscore"])
    p.add_argument("--peers", nargs="*", default=list(PEERS), help=f"subset of {list(PEERS)}")
    p.add_argument("--peer-cells", type=int, default=20_000, help="cells peers really run on")
    p.add_argument("--peer-sets", type=int, default=20, help="sets the scanpy loop really runs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--ooc-cells", type=int, default=0, help="out-of-core file cells (0=skip)")
    p.add_argument("--ooc-per-cell", type=int, default=1000, help="detected genes per cell")
    p.add_argument("--ooc-chunk", type=int, default=None, help="rows per streamed chunk")
    p.add_argument("--jit", action="store_true", help="measure cold vs warm JIT in fresh processes")
    p.add_argument("--mem", action="store_true",
                   help="per-method extra memory in fresh processes (tracemalloc + RSS)")
    p.add_argument("--csv", type=Path, default=None, help="also write the table here")
    args = p.parse_args(argv)
    print(f"# numba threads {args.threads}, load average {os.getloadavg()}", flush=True)
    if args.jit:
        bench_jit()
    if args.mem:
        bench_memory(args)
    elif args.cells:
        table = bench_in_memory(args)
        with pd.option_context("display.width", 250, "display.max_columns", None):
            print(table.T.to_string())
        if args.csv:
            table.to_csv(args.csv, index=False)
        print("# * = extrapolated linearly from --peer-cells cells (and --peer-sets sets)")
    if args.ooc_cells:
        bench_out_of_core(args)


if __name__ == "__main__":
    main()
