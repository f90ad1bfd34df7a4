"""Reading samples and writing results safely.

Every reader returns an AnnData whose ``X`` holds raw integer counts as float32 CSR,
``var_names`` gene symbols (made unique) and ``obs_names`` the barcodes of the file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

FORMATS = ("10x_mtx", "10x_h5", "h5ad")


class InputDataError(ValueError):
    """A sample's data cannot be used; the message names the sample and the fix."""


def _mtx_folder_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else []


def _check_format_matches(path: Path, fmt: str, sample: str) -> None:
    if fmt == "10x_mtx":
        names = _mtx_folder_files(path)
        if not path.is_dir() or not any(n.startswith("matrix.mtx") for n in names):
            raise InputDataError(
                f"sample '{sample}': format is 10x_mtx but '{path}' is not a folder holding "
                f"matrix.mtx[.gz] (found: {names or 'a file'}). Point `path` at the Cell "
                "Ranger folder or change `format` in the sample sheet."
            )
    elif path.is_dir():
        raise InputDataError(
            f"sample '{sample}': format is {fmt} but '{path}' is a folder. Use format "
            "10x_mtx for Cell Ranger folders, or point `path` at the file."
        )
    elif fmt in ("10x_h5", "h5ad"):
        with open(path, "rb") as fh:
            magic = fh.read(8)
        if magic != b"\x89HDF\r\n\x1a\n":
            raise InputDataError(
                f"sample '{sample}': '{path}' is not an HDF5 file, so it cannot be {fmt}. "
                "Check `format` in the sample sheet, or re-download the file if it is "
                "truncated."
            )


def read_sample(path: str | Path, fmt: str, *, sample: str, layer: str | None = None) -> ad.AnnData:
    """Read one sample's raw counts as cells x genes float32 CSR.

    ``fmt`` is ``10x_mtx`` (Cell Ranger v2 or v3 folder, gzipped or not), ``10x_h5`` or
    ``h5ad`` (raw counts in ``X`` or in ``layer``).
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise InputDataError(f"sample '{sample}': unknown format '{fmt}'; use one of {FORMATS}")
    if not path.exists():
        raise InputDataError(
            f"sample '{sample}': path '{path}' does not exist. Fix `path` in the sample sheet."
        )
    _check_format_matches(path, fmt, sample)
    try:
        if fmt == "10x_mtx":
            adata = sc.read_10x_mtx(path, var_names="gene_symbols", make_unique=True,
                                    cache=False)
        elif fmt == "10x_h5":
            adata = sc.read_10x_h5(path)
        else:
            adata = ad.read_h5ad(path)
    except Exception as err:  # noqa: BLE001 - re-raised with the sample named
        raise InputDataError(
            f"sample '{sample}': could not read '{path}' as {fmt} ({type(err).__name__}: "
            f"{err}). The file may be truncated or corrupt: re-download or re-export it."
        ) from err
    if fmt == "h5ad" and layer:
        if layer not in adata.layers:
            raise InputDataError(
                f"sample '{sample}': layer '{layer}' not in '{path}' (layers: "
                f"{list(adata.layers)}). Set `layer` in the sample sheet to the raw-count "
                "layer, or leave it empty if X holds raw counts."
            )
        adata.X = adata.layers[layer]
    adata = ad.AnnData(X=adata.X, obs=pd.DataFrame(index=adata.obs_names.astype(str)),
                       var=pd.DataFrame(index=adata.var_names.astype(str)))
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    adata.var_names_make_unique()
    validate_counts(adata, sample=sample, source=str(path))
    return adata


def validate_counts(adata: ad.AnnData, *, sample: str, source: str) -> None:
    """Raise if the matrix is empty, negative, non-integer or has duplicate barcodes."""
    if adata.n_obs == 0 or adata.n_vars == 0 or adata.X.nnz == 0:
        raise InputDataError(
            f"sample '{sample}': '{source}' holds an empty matrix ({adata.n_obs} cells x "
            f"{adata.n_vars} genes, {getattr(adata.X, 'nnz', 0)} non-zeros)."
        )
    data = adata.X.data
    if not np.isfinite(data).all():
        raise InputDataError(f"sample '{sample}': '{source}' contains NaN or infinite values.")
    if (data < 0).any():
        raise InputDataError(
            f"sample '{sample}': '{source}' contains negative values; mscflow needs raw "
            "counts. If this is an h5ad, set `layer` to the raw-count layer."
        )
    if not np.all(np.mod(data, 1) == 0):
        raise InputDataError(
            f"sample '{sample}': '{source}' holds non-integer values, which looks like "
            "normalised data; mscflow needs raw counts. Set `layer` in the sample sheet to "
            "the raw-count layer (e.g. 'counts')."
        )
    if adata.obs_names.has_duplicates:
        dups = adata.obs_names[adata.obs_names.duplicated()].unique()[:5].tolist()
        raise InputDataError(
            f"sample '{sample}': '{source}' has duplicate barcodes {dups}; each barcode "
            "must appear once per sample."
        )


def prefix_barcodes(adata: ad.AnnData, sample: str) -> None:
    """Make cell names unique across samples as ``<sample>:<barcode>`` (in place)."""
    adata.obs["barcode"] = adata.obs_names.astype(str)
    adata.obs_names = [f"{sample}:{b}" for b in adata.obs_names]


def write_h5ad_atomic(adata: ad.AnnData, path: str | Path) -> None:
    """Write an h5ad to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        adata.write_h5ad(tmp, compression="gzip")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_table_atomic(df: pd.DataFrame, path: str | Path, *, index: bool = False) -> None:
    """Write a TSV or parquet table through a temporary file and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=index)
        else:
            compression = {"method": "gzip", "mtime": 0} if path.suffix == ".gz" else None
            df.to_csv(tmp, sep="\t", index=index, compression=compression)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
