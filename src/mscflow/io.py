"""Writing results safely (atomic writers), and the sample readers of
:mod:`mscflow.readers` under their historical names.

Every writer writes to a temporary file beside its target and renames it into place only
when complete, so a file under its final name is always whole.
"""

from __future__ import annotations

import gzip
import io
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anndata as ad
import pandas as pd

from mscflow.errors import InputDataError
from mscflow.readers import (
    FORMATS,
    SPECIES_MIN_GENES,
    SPECIES_MIN_MATCH,
    check_species,
    check_unique_genes,
    prefix_barcodes,
    read_sample,
    symbol_styles,
    validate_counts,
)

__all__ = [
    "FORMATS", "SPECIES_MIN_GENES", "SPECIES_MIN_MATCH", "InputDataError", "check_species",
    "check_unique_genes", "prefix_barcodes", "read_sample", "remove_pending_files",
    "symbol_styles", "validate_counts", "write_figure_atomic", "write_h5ad_atomic",
    "write_table_atomic", "write_text_atomic",
]

# Temporary files of atomic writes in progress (removed on SIGTERM, see setup_logging).
_PENDING: set[str] = set()


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
    """Write a TSV (``.gz``: gzip with a fixed timestamp and no file name in its header,
    so reruns give identical bytes) or parquet table through a temporary file and rename it
    into place. ``csv_options`` go to ``DataFrame.to_csv`` (e.g. ``na_rep="NA",
    float_format="%.6g"``)."""
    suffix = Path(path).suffix
    with _atomic_target(path) as tmp:
        if suffix == ".parquet":
            df.to_parquet(tmp, index=index)
        elif suffix == ".gz":
            # pandas' gzip would store the temporary file's random name in the header
            with (open(tmp, "wb") as raw,
                  gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed,
                  io.TextIOWrapper(packed, encoding="utf-8", newline="") as text):
                df.to_csv(text, sep="\t", index=index, **csv_options)
        else:
            df.to_csv(tmp, sep="\t", index=index, **csv_options)


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
