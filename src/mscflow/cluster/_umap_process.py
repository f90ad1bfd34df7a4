"""UMAP in a separate process, so it runs on one core while Leiden and markers use the other.

``python -m mscflow.cluster._umap_process <input.npz> <output.npz> <parent pid>`` imports scanpy and
umap-learn, waits for "go" on stdin, reads the PCA, the neighbour graph and the UMAP
settings written by :meth:`mscflow.cluster.core.UmapProcess.submit`, runs ``sc.tl.umap`` on them and
writes the coordinates. Same inputs and seed as an in-process
``sc.tl.umap`` call, so the embedding is the same.
"""

from __future__ import annotations

import json
import os
import sys

import anndata as ad
import numpy as np
from scipy import sparse

from mscflow.cluster.core import run_umap


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to kill this process when the cluster job that started it ends."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent kills it on errors
        pass
    if os.getppid() != parent_pid:  # the parent ended before the request took effect
        sys.exit(1)


def run(inp: str, out: str) -> None:
    """Read the payload, embed, write ``X_umap`` and ``uns["umap"]["params"]``."""
    with np.load(inp) as f:
        n = int(f["n_obs"])
        graph = sparse.csr_matrix((f["data"], f["indices"], f["indptr"]), shape=(n, n))
        rep = f["rep"]
        settings = json.loads(str(f["settings"]))
    adata = ad.AnnData(obs={"_": np.zeros(n)}, obsm={settings["use_rep"]: rep})
    adata.obsp["connectivities"] = graph
    adata.uns["neighbors"] = {"connectivities_key": "connectivities",
                              "distances_key": "distances", "params": settings["params"]}
    run_umap(adata, min_dist=settings["min_dist"], random_state=settings["random_state"],
             maxiter=settings["maxiter"], solver=settings["solver"])
    params = {k: np.asarray(v).item() for k, v in adata.uns["umap"]["params"].items()}
    np.savez(out, X_umap=adata.obsm["X_umap"], params=json.dumps(params))


if __name__ == "__main__":
    from mscflow.cluster.core import cache_umap_kernels

    die_with_parent(int(sys.argv[3]))
    cache_umap_kernels()  # imports umap-learn while the parent works
    if sys.stdin.readline().strip() != "go":  # the parent ended without a graph
        sys.exit(1)
    run(sys.argv[1], sys.argv[2])
