"""Writers of the demo's four input formats (Cell Ranger mtx v3/v2, 10x h5, h5ad)."""

from __future__ import annotations

import gzip
import io
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp


def barcodes(n: int, rng: np.random.Generator) -> list[str]:
    """Unique 16-mer barcodes with the 10x '-1' suffix (identical across samples on purpose)."""
    alphabet = np.array(list("ACGT"))
    seen: dict[str, None] = {}
    while len(seen) < n:
        seen["".join(rng.choice(alphabet, 16)) + "-1"] = None
    return list(seen)


def write_gzip(path: Path, payload: bytes) -> None:
    """Gzip with a fixed timestamp (and the file's own name) so reruns write identical
    bytes."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as fh:
        fh.write(payload)


def _gene_ids(genes: Sequence[str]) -> list[str]:
    return [f"DEMO{i:06d}" for i in range(len(genes))]


def write_10x_mtx(path: Path, counts: sp.csr_matrix, cell_barcodes: Sequence[str],
                  genes: Sequence[str], version: int) -> None:
    """Write a Cell Ranger folder: v3 gzipped (features.tsv.gz) or v2 plain (genes.tsv)."""
    path.mkdir(parents=True, exist_ok=True)
    gene_ids = _gene_ids(genes)
    matrix = sp.coo_matrix(counts.T)
    if version == 3:
        buffer = io.BytesIO()
        scipy.io.mmwrite(buffer, matrix, field="integer")
        write_gzip(path / "matrix.mtx.gz", buffer.getvalue())
        write_gzip(path / "barcodes.tsv.gz", ("\n".join(cell_barcodes) + "\n").encode())
        features = "".join(f"{i}\t{g}\tGene Expression\n"
                           for i, g in zip(gene_ids, genes, strict=True))
        write_gzip(path / "features.tsv.gz", features.encode())
    else:
        scipy.io.mmwrite(path / "matrix.mtx", matrix, field="integer")
        (path / "barcodes.tsv").write_text("\n".join(cell_barcodes) + "\n")
        (path / "genes.tsv").write_text(
            "".join(f"{i}\t{g}\n" for i, g in zip(gene_ids, genes, strict=True))
        )


def write_10x_h5(path: Path, counts: sp.csr_matrix, cell_barcodes: Sequence[str],
                 genes: Sequence[str]) -> None:
    """Write a Cell Ranger v3 filtered_feature_bc_matrix.h5."""
    counts = counts.tocsr()
    with h5py.File(path, "w") as f:
        grp = f.create_group("matrix")
        grp.create_dataset("barcodes", data=np.array(cell_barcodes, dtype="S"))
        grp.create_dataset("data", data=counts.data.astype(np.int32), compression="gzip")
        grp.create_dataset("indices", data=counts.indices.astype(np.int64),
                           compression="gzip")
        grp.create_dataset("indptr", data=counts.indptr.astype(np.int64))
        grp.create_dataset("shape", data=np.array(counts.shape[::-1], dtype=np.int32))
        feat = grp.create_group("features")
        feat.create_dataset("id", data=np.array(_gene_ids(genes), dtype="S"))
        feat.create_dataset("name", data=np.array(genes, dtype="S"))
        feat.create_dataset("feature_type", data=np.array(["Gene Expression"] * len(genes),
                                                          dtype="S"))
        feat.create_dataset("genome", data=np.array(["mm10"] * len(genes), dtype="S"))
        feat.create_dataset("_all_tag_keys", data=np.array(["genome"], dtype="S"))


def write_h5ad_with_counts_layer(path: Path, counts: sp.csr_matrix,
                                 cell_barcodes: Sequence[str], genes: Sequence[str]) -> None:
    """Write an h5ad as public portals do: log-normalised X, raw counts in layer 'counts'."""
    x = counts.astype(np.float32)
    totals = np.asarray(x.sum(axis=1)).ravel()
    totals[totals == 0] = 1.0
    norm = sp.diags(1e4 / totals) @ x
    norm.data = np.log1p(norm.data)
    adata = ad.AnnData(
        X=sp.csr_matrix(norm, dtype=np.float32),
        obs=pd.DataFrame(index=list(cell_barcodes)),
        var=pd.DataFrame(index=list(genes)),
        layers={"counts": counts.astype(np.float32)},
    )
    adata.write_h5ad(path, compression="gzip")


def write_sample(outdir: Path, sample: str, fmt: str, counts: sp.csr_matrix,
                 cell_barcodes: Sequence[str], genes: Sequence[str]) -> tuple[Path, str]:
    """Write one sample in ``fmt`` (10x_mtx_v3, 10x_mtx_v2, 10x_h5 or h5ad); return its path
    and the sample sheet's ``format`` value."""
    if fmt.startswith("10x_mtx"):
        target = outdir / sample
        write_10x_mtx(target, counts, cell_barcodes, genes, int(fmt[-1]))
        return target, "10x_mtx"
    if fmt == "10x_h5":
        target = outdir / f"{sample}_filtered_feature_bc_matrix.h5"
        write_10x_h5(target, counts, cell_barcodes, genes)
        return target, "10x_h5"
    if fmt == "h5ad":
        target = outdir / f"{sample}.h5ad"
        write_h5ad_with_counts_layer(target, counts, cell_barcodes, genes)
        return target, "h5ad"
    raise ValueError(f"unknown demo format {fmt!r}: use 10x_mtx_v3, 10x_mtx_v2, 10x_h5 or h5ad")
