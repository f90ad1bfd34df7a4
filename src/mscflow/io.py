"""Reading samples and writing results safely.

Every reader returns an AnnData whose ``X`` holds raw integer counts as float32 CSR,
``var_names`` gene symbols (made unique) and ``obs_names`` the barcodes of the file.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

from mscflow.errors import InputDataError

FORMATS = ("10x_mtx", "10x_h5", "h5ad")
# A sample whose symbols are less than this share in the sheet's species' style is refused.
SPECIES_MIN_MATCH = 0.5
# Fewer classifiable gene names than this: too few to judge the species.
SPECIES_MIN_GENES = 20
_ENSEMBL = {"mouse": re.compile(r"^ENSMUSG\d"), "human": re.compile(r"^ENSG\d")}
_ANY_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d")


# Temporary files of atomic writes in progress (removed on SIGTERM, see setup_logging).
_PENDING: set[str] = set()




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
    if fmt == "h5ad":
        check_unique_genes(adata, sample=sample, source=str(path))
    else:  # 10x symbols repeat (their feature ids do not): suffix them like scanpy does
        adata.var_names_make_unique()
    validate_counts(adata, sample=sample, source=str(path))
    return adata


def check_unique_genes(adata: ad.AnnData, *, sample: str, source: str) -> None:
    """Raise if gene names repeat (an h5ad's var_names are the user's choice)."""
    if adata.var_names.has_duplicates:
        dups = adata.var_names[adata.var_names.duplicated()].unique()
        raise InputDataError(
            f"sample '{sample}': '{source}' has {len(dups)} duplicate gene name(s), e.g. "
            f"{dups[:5].tolist()}; each gene must appear once. Sum or drop the repeats, or "
            "call adata.var_names_make_unique() before writing the h5ad."
        )


def symbol_styles(genes: Iterable[str]) -> dict[str, list[str]]:
    """Gene names written mouse-style (``Actb``, ``mt-Co1``, ENSMUSG...) and human-style
    (``ACTB``, ``MT-CO1``, ENSG...); names of neither style (numbers, other Ensembl) are left out.
    """
    out: dict[str, list[str]] = {"mouse": [], "human": []}
    for gene in map(str, genes):
        if _ANY_ENSEMBL.match(gene):
            for species, pattern in _ENSEMBL.items():
                if pattern.match(gene):
                    out[species].append(gene)
        elif gene[:1].isupper() and any(c.islower() for c in gene) or gene.startswith("mt-"):
            out["mouse"].append(gene)
        elif any(c.isupper() for c in gene) and not any(c.islower() for c in gene):
            out["human"].append(gene)
    return out


def check_species(adata: ad.AnnData, species: str, *, sample: str, source: str,
                  min_match: float = SPECIES_MIN_MATCH) -> None:
    """Raise if too few gene names look like the sample sheet's species (e.g. human data
    in a mouse run): the message names the sample, the shares and the likely species."""
    styles = symbol_styles(adata.var_names)
    other = "human" if species == "mouse" else "mouse"
    total = len(styles["mouse"]) + len(styles["human"])
    if species not in styles or total < SPECIES_MIN_GENES:
        return
    share = len(styles[species]) / total
    if share >= min_match:
        return
    example = {"mouse": "Actb, mt-Co1", "human": "ACTB, MT-CO1"}
    raise InputDataError(
        f"sample '{sample}': the sample sheet says {species}, but only {share:.0%} of the "
        f"{total} gene names in '{source}' look {species} (like {example[species]}); "
        f"{1 - share:.0%} look {other} (e.g. {', '.join(styles[other][:5])}). This is "
        f"likely a {other} sample: fix `species` in the sample sheet (human and mouse "
        "samples go in separate runs) or remove the sample."
    )


def validate_counts(adata: ad.AnnData, *, sample: str, source: str) -> None:
    """Raise if the matrix is empty, negative, non-integer or has duplicate barcodes."""
    if adata.n_obs == 0 or adata.n_vars == 0 or adata.X.nnz == 0:
        raise InputDataError(
            f"sample '{sample}': '{source}' holds an empty matrix ({adata.n_obs} cells x "
            f"{adata.n_vars} genes, {getattr(adata.X, 'nnz', 0)} non-zeros). Point `path` "
            "at the sample's count matrix (e.g. Cell Ranger's filtered_feature_bc_matrix) or "
            "remove the sample from the sheet."
        )
    data = adata.X.data
    if not np.isfinite(data).all():
        raise InputDataError(
            f"sample '{sample}': '{source}' contains NaN or infinite values; mscflow needs raw "
            "counts. Set `layer` to the raw-count layer or re-export the counts."
        )
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
            "must appear once per sample: re-export the matrix without repeated cells."
        )
    check_unique_genes(adata, sample=sample, source=source)


def prefix_barcodes(adata: ad.AnnData, sample: str) -> None:
    """Make cell names unique across samples as ``<sample>:<barcode>`` (in place)."""
    adata.obs["barcode"] = adata.obs_names.astype(str)
    adata.obs_names = [f"{sample}:{b}" for b in adata.obs_names]


def remove_pending_files() -> None:
    """Delete the temporary files of unfinished atomic writes (called on SIGTERM)."""
    for tmp in list(_PENDING):
        Path(tmp).unlink(missing_ok=True)
        _PENDING.discard(tmp)


def _publish(tmp: str, path: Path) -> None:
    """Give the finished temporary file the usual permissions and rename it into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600 files
    os.replace(tmp, path)


@contextmanager
def _atomic_target(path: str | Path) -> Iterator[str]:
    """Yield a temporary file beside ``path``; rename it into place only if the block ends
    without error, and remove it otherwise (also on SIGTERM, through ``_PENDING``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    _PENDING.add(tmp)
    try:
        yield tmp
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        _PENDING.discard(tmp)


def write_h5ad_atomic(adata: ad.AnnData, path: str | Path, *,
                      compression: str | None = "gzip") -> None:
    """Write an h5ad to a temporary file beside ``path`` and rename it into place.

    ``compression`` is ``"gzip"`` (level 1), ``"none"``/``None`` (anndata's default, ~10x
    faster to write and read) or ``"lzf"``. gzip and none write identical bytes for
    identical data; lzf's bytes vary between runs (liblzf leaves its hash table
    uninitialised), so the workflow offers only the first two: reruns must give identical
    files.
    """
    if compression == "none":
        compression = None
    options = 1 if compression == "gzip" else None
    with _atomic_target(path) as tmp:
        adata.write_h5ad(tmp, compression=compression, compression_opts=options)


def write_table_atomic(df: pd.DataFrame, path: str | Path, *, index: bool = False,
                       **csv_options: object) -> None:
    """Write a TSV (``.gz``: gzip with a fixed timestamp) or parquet table through a
    temporary file and rename it into place. ``csv_options`` go to ``DataFrame.to_csv``
    (e.g. ``na_rep="NA", float_format="%.6g"``)."""
    suffix = Path(path).suffix
    with _atomic_target(path) as tmp:
        if suffix == ".parquet":
            df.to_parquet(tmp, index=index)
        else:
            compression = {"method": "gzip", "mtime": 0} if suffix == ".gz" else None
            df.to_csv(tmp, sep="\t", index=index, compression=compression, **csv_options)


def write_text_atomic(text: str, path: str | Path) -> None:
    """Write a text file (JSON, HTML) through a temporary file and rename it into place."""
    with _atomic_target(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def write_figure_atomic(fig: object, path: str | Path, **savefig_options: object) -> None:
    """Save a matplotlib figure through a temporary file and rename it into place; the
    format follows the suffix of ``path`` (``.png``, ``.pdf``, ``.svg``)."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    with _atomic_target(path) as tmp:
        fig.savefig(tmp, format=fmt, **savefig_options)
