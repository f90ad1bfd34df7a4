"""The Cell Ranger folder reader gives what scanpy's read_10x_mtx gives, on the real Tabula
Muris channel and on the v2 layout and a feature-barcoding folder."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import scanpy as sc
from helpers import TABULA_MURIS

from mscflow.inputs.tenx import mtx_folder_files, read_mtx_folder


def _same_as_scanpy(folder: Path) -> None:
    ours = read_mtx_folder(folder, sample="s")
    theirs = sc.read_10x_mtx(folder, var_names="gene_symbols", make_unique=True, cache=False)
    assert ours.shape == theirs.shape
    assert list(ours.obs_names) == list(theirs.obs_names)
    assert list(ours.var_names) == list(theirs.var_names)
    assert (ours.X != theirs.X).nnz == 0


def test_real_channel_reads_as_scanpy_reads_it() -> None:
    _same_as_scanpy(TABULA_MURIS)
    assert [p.name for p in mtx_folder_files(TABULA_MURIS)] == [
        "matrix.mtx.gz", "barcodes.tsv.gz", "features.tsv.gz"]


def test_v2_folder_and_antibody_features(tmp_path: Path) -> None:
    """Cell Ranger 2 (uncompressed, genes.tsv) and a v3 folder with antibody rows, which
    scanpy leaves out (gex_only)."""
    v2 = tmp_path / "v2"
    v2.mkdir()
    for name, target in (("matrix.mtx.gz", "matrix.mtx"), ("barcodes.tsv.gz", "barcodes.tsv")):
        with gzip.open(TABULA_MURIS / name, "rb") as src, open(v2 / target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    with gzip.open(TABULA_MURIS / "features.tsv.gz", "rt") as src:
        (v2 / "genes.tsv").write_text("".join("\t".join(line.split("\t")[:2]) + "\n"
                                              for line in src.read().splitlines()))
    _same_as_scanpy(v2)
    adt = tmp_path / "adt"
    adt.mkdir()
    for name in ("matrix.mtx.gz", "barcodes.tsv.gz"):
        shutil.copy2(TABULA_MURIS / name, adt / name)
    with gzip.open(TABULA_MURIS / "features.tsv.gz", "rt") as src:
        lines = src.read().splitlines()
    lines[:3] = [line.replace("Gene Expression", "Antibody Capture") for line in lines[:3]]
    with gzip.open(adt / "features.tsv.gz", "wt") as dst:
        dst.write("\n".join(lines) + "\n")
    _same_as_scanpy(adt)
    assert read_mtx_folder(adt, sample="s").n_vars == len(lines) - 3
    assert np.isfinite(read_mtx_folder(adt, sample="s").X.data).all()
