"""Cell Ranger's matrix folder (``matrix.mtx``, ``barcodes.tsv``, ``features.tsv`` or the
v2 ``genes.tsv``, each gzipped or not), read with every file checked against the matrix
header, so a short barcodes file, an empty folder or a value the header's type does not
allow is named instead of being read wrongly.

The values are parsed as real numbers whatever the header says (scipy's reader truncates
``1.5`` to ``1`` in an ``integer`` matrix without a word), then checked: an ``integer``
matrix holding a fraction stops with the file and the value named.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from mscflow.errors import InputDataError

MATRIX_NAMES = ("matrix.mtx.gz", "matrix.mtx")
BARCODE_NAMES = ("barcodes.tsv.gz", "barcodes.tsv")
FEATURE_NAMES = ("features.tsv.gz", "features.tsv", "genes.tsv.gz", "genes.tsv")
GENE_EXPRESSION = "Gene Expression"


def _first(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def mtx_folder_files(folder: str | Path) -> list[Path]:
    """The matrix, barcodes and features files of a Cell Ranger folder (those present)."""
    folder = Path(folder)
    found = (_first(folder, names) for names in (MATRIX_NAMES, BARCODE_NAMES, FEATURE_NAMES))
    return [p for p in found if p is not None]


def _open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


@dataclass(frozen=True)
class MtxHeader:
    """The banner and size line of a Matrix Market file."""

    field: str  # integer, real, double, pattern, ...
    n_rows: int
    n_cols: int
    nnz: int
    banner: bytes  # the first line as written


def read_mtx_header(path: Path, sample: str) -> MtxHeader:
    """The header of ``path``; a file that is not a coordinate Matrix Market file is named."""
    with _open_binary(path) as handle:
        banner = handle.readline()
        line = handle.readline()
        while line.startswith(b"%"):
            line = handle.readline()
    words = banner.decode("latin-1").split()
    size = line.split()
    if (len(words) < 5 or words[0].lower() != "%%matrixmarket"
            or words[2].lower() != "coordinate" or len(size) != 3):
        raise InputDataError(
            f"sample '{sample}': '{path}' is not a Matrix Market coordinate file (it starts "
            f"{banner[:60]!r}); Cell Ranger writes '%%MatrixMarket matrix coordinate integer "
            "general'. Re-download or re-export the matrix.")
    n_rows, n_cols, nnz = (int(x) for x in size)
    return MtxHeader(words[3].lower(), n_rows, n_cols, nnz, banner)


class _RealBanner(io.RawIOBase):
    """The matrix file with its banner's field read as ``real`` (values parsed exactly)."""

    def __init__(self, path: Path, header: MtxHeader) -> None:
        self._handle = _open_binary(path)
        self._handle.readline()
        self._head = header.banner.replace(b" integer", b" real", 1)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001 - a writable buffer
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n], self._head = self._head[:n], self._head[n:]
            return n
        data = self._handle.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self._handle.close()
        super().close()


def _read_lines(path: Path) -> pd.DataFrame:
    """A tab-separated file of text columns (no header), names as written; empty: no rows."""
    try:
        return pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False,
                           quoting=3)
    except pd.errors.EmptyDataError:
        return pd.DataFrame({0: pd.Series([], dtype=object)})


def read_mtx_folder(folder: str | Path, *, sample: str) -> ad.AnnData:
    """Cells x genes float64 CSR of a Cell Ranger folder, var names the gene symbols made
    unique (as scanpy's ``read_10x_mtx``); only ``Gene Expression`` features of v3 folders.

    Raises :class:`InputDataError` naming the sample and the file: a missing file, a matrix
    that is not Matrix Market, a folder without cells, a barcodes or features file whose
    length does not match the matrix, a fraction in an ``integer`` matrix.
    """
    import scipy.io

    folder = Path(folder)
    matrix, barcodes_file, features_file = (_first(folder, n) for n in (
        MATRIX_NAMES, BARCODE_NAMES, FEATURE_NAMES))
    for found, names in ((matrix, MATRIX_NAMES), (barcodes_file, BARCODE_NAMES),
                         (features_file, FEATURE_NAMES)):
        if found is None:
            raise InputDataError(
                f"sample '{sample}': the 10x folder '{folder}' has no {' or '.join(names)} "
                f"(it holds {sorted(p.name for p in folder.iterdir())}). Point `path` at the "
                "Cell Ranger matrix folder (e.g. filtered_feature_bc_matrix).")
    header = read_mtx_header(matrix, sample)
    barcodes = _read_lines(barcodes_file)[0].to_numpy()
    if header.n_cols == 0 or barcodes.size == 0:
        raise InputDataError(
            f"sample '{sample}': the 10x folder '{folder}' holds no cells ('{matrix.name}' has "
            f"{header.n_cols} columns, '{barcodes_file.name}' {barcodes.size} barcodes). "
            "Cell Ranger found no cells in this library: check the run, or remove the sample "
            "from the sheet.")
    features = _read_lines(features_file)
    if header.n_cols != barcodes.size or header.n_rows != len(features):
        transposed = header.n_rows == barcodes.size and header.n_cols == len(features)
        which = barcodes_file if header.n_cols != barcodes.size else features_file
        raise InputDataError(
            f"sample '{sample}': '{matrix}' is {header.n_rows} genes x {header.n_cols} cells "
            f"but '{barcodes_file}' lists {barcodes.size} barcodes and '{features_file}' "
            f"{len(features)} features; "
            + ("the matrix looks transposed (cells as rows): write it genes x cells as Cell "
               "Ranger does." if transposed else
               f"'{which}' does not belong to this matrix or is truncated: re-download or "
               "re-export the folder."))
    with io.BufferedReader(_RealBanner(matrix, header), buffer_size=1 << 20) as stream:
        counts = sp.csr_matrix(scipy.io.mmread(stream).T)
    if header.field == "integer" and counts.nnz:
        fraction = np.abs(counts.data - np.rint(counts.data))
        if fraction.max() > 0:
            raise InputDataError(
                f"sample '{sample}': '{matrix}' declares integer values in its header but "
                f"holds {int((fraction > 0).sum())} non-integer one(s) (e.g. "
                f"{counts.data[int(fraction.argmax())]:.6g}). The file was written wrongly: "
                "re-export the raw counts.")
    symbols = features[1] if features.shape[1] > 1 else features[0]
    var = pd.DataFrame({"gene_ids": features[0].to_numpy()},
                       index=ad.utils.make_index_unique(pd.Index(symbols.to_numpy())))
    adata = ad.AnnData(X=counts, obs=pd.DataFrame(index=pd.Index(barcodes)), var=var)
    if features.shape[1] > 2 and "genes" not in features_file.name:
        keep = (features[2] == GENE_EXPRESSION).to_numpy()
        if not keep.all():
            adata = adata[:, keep].copy()
    return adata


__all__ = ["MtxHeader", "mtx_folder_files", "read_mtx_folder", "read_mtx_header"]
