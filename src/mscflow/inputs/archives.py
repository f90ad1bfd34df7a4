"""Unpack a verified download into the layout :func:`mscflow.io.read_sample` reads.

Archives (tar, tar.gz, zip) and gzipped single files are recognised by their first bytes,
not by the URL, and every member is checked before anything is read: absolute paths, ``..``,
links pointing outside the archive and special files reject the whole archive
(``tarfile.data_filter``, the check behind ``filter="data"``; the same rules for zip). Only
regular files are streamed out, to names this module chooses, so no archive path is ever
used as a file-system path. GEO-style prefixes (``GSM123_ctrl_barcodes.tsv.gz``) are
stripped, legacy ``genes.tsv`` becomes ``features.tsv.gz`` with a ``Gene Expression``
column, and the three files are gzipped so the v3 reader applies to every folder.

:func:`unpack_10x_mtx` writes a Cell Ranger v3 folder, :func:`unpack_matrix_file` a 10x h5 or
h5ad file; each appears under its final name only when complete. :mod:`mscflow.inputs.fetch`
downloads and verifies the file and calls them through :func:`mscflow.inputs.fetch.unpack`; the
errors raised here (:class:`FetchError`, :class:`UnsafeArchiveError`) are importable from
there too.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Any

from mscflow.errors import MscflowError

LOG = logging.getLogger("mscflow.inputs.fetch")  # unpacking is part of the fetch step's log

CHUNK = 1 << 20
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
MTX_ROLES = ("matrix", "barcodes", "features")
_ROLE_RE = re.compile(
    r"(?:^|[_.\-])(matrix\.mtx|barcodes\.tsv|features\.tsv|genes\.tsv)(\.gz)?$", re.IGNORECASE
)


class FetchError(MscflowError, RuntimeError):
    """A download or unpack failed; the message names the sample, the URL and the fix."""


class UnsafeArchiveError(FetchError):
    """An archive member would escape the target folder or is a link or device."""


# --------------------------------------------------------------------------- archives


def sniff(path: str | Path) -> str:
    """Return ``tar``, ``zip``, ``gzip``, ``hdf5`` or ``other`` from the file's first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(HDF5_MAGIC):
        return "hdf5"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return "other"


def _unsafe_name_reason(name: str) -> str | None:
    """Return why an archive member name is unsafe, or None if it stays inside the target."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "'..' in path"
    return None


def _tar_members(tf: tarfile.TarFile, sample: str, url: str) -> dict[str, tarfile.TarInfo]:
    """Check every member with ``tarfile.data_filter``; return the regular files by name."""
    files: dict[str, tarfile.TarInfo] = {}
    with tempfile.TemporaryDirectory() as probe:
        for info in tf:
            reason = _unsafe_name_reason(info.name)
            if reason is None:
                try:
                    tarfile.data_filter(info, probe)
                except tarfile.FilterError as err:
                    reason = f"{type(err).__name__}: {err}"
            if reason is None and not (info.isfile() or info.isdir() or info.issym()
                                       or info.islnk()):
                reason = "special file (device or fifo)"
            if reason:
                raise UnsafeArchiveError(
                    f"sample '{sample}': archive from {url} has an unsafe member "
                    f"'{info.name}' ({reason}); nothing was extracted. Do not use this file; "
                    "check the URL and sha256 against the accession page."
                )
            if info.isfile():
                files[info.name.removeprefix("./")] = info
    return files


def _zip_members(zf: zipfile.ZipFile, sample: str, url: str) -> dict[str, zipfile.ZipInfo]:
    """Reject absolute, ``..`` and symlink members; return the regular files by name."""
    files: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        reason = _unsafe_name_reason(info.filename)
        mode = info.external_attr >> 16
        if reason is None and stat.S_ISLNK(mode):
            reason = "symbolic link"
        if reason:
            raise UnsafeArchiveError(
                f"sample '{sample}': zip from {url} has an unsafe member '{info.filename}' "
                f"({reason}); nothing was extracted. Do not use this file; check the URL "
                "and sha256 against the accession page."
            )
        if not info.is_dir():
            files[info.filename.removeprefix("./")] = info
    return files


def select_members(names: Iterable[str], member: str) -> list[str]:
    """Return the names that belong to ``member``: a folder, a file, or a name prefix.

    An empty ``member`` selects everything. ``dir/sub`` selects the files under that folder
    when there are any, else names starting with the string (GEO ``GSM123_ctrl_`` prefixes,
    with or without a folder in front of them).
    """
    names = sorted(names)
    if not member:
        return names
    member = member.removeprefix("./")
    folder = member.rstrip("/") + "/"
    in_folder = [n for n in names if n == member or n.startswith(folder)]
    if in_folder:
        return in_folder
    return [n for n in names if n.startswith(member)
            or PurePosixPath(n).name.startswith(member)]


def mtx_role(name: str) -> tuple[str, bool, bool] | None:
    """Return (role, legacy_genes, gzipped) for a 10x file name, any GEO prefix ignored."""
    match = _ROLE_RE.search(PurePosixPath(name).name)
    if not match:
        return None
    stem = match.group(1).lower()
    role = {"matrix.mtx": "matrix", "barcodes.tsv": "barcodes"}.get(stem, "features")
    return role, stem == "genes.tsv", bool(match.group(2))


def assign_mtx_files(names: Iterable[str], sample: str, url: str,
                     member: str) -> dict[str, str]:
    """Map each 10x role to exactly one archive name, or raise naming what is missing."""
    found: dict[str, list[str]] = {r: [] for r in MTX_ROLES}
    for name in names:
        role = mtx_role(name)
        if role:
            found[role[0]].append(name)
    missing = [r for r, v in found.items() if not v]
    ambiguous = {r: v for r, v in found.items() if len(v) > 1}
    if missing or ambiguous:
        what = (f"no {', '.join(missing)} file" if missing else
                "several candidates: " + "; ".join(f"{r}: {v}" for r, v in ambiguous.items()))
        raise FetchError(
            f"sample '{sample}': the download from {url} (member '{member or '<all>'}') does "
            f"not hold one 10x matrix: {what}. Set `member` in the sample sheet to the "
            "sample's folder (e.g. filtered_feature_bc_matrix/) or GEO file prefix (e.g. "
            "GSM1234567_ctrl_)."
        )
    return {r: v[0] for r, v in found.items()}


# --------------------------------------------------------------------------- writing


def _write_canonical(src: IO[bytes], dest: Path, *, gzipped: bool, fix_columns: bool) -> int:
    """Decompress ``src`` if needed (reading it to the end), write it gzipped to ``dest``.

    With ``fix_columns`` (features/genes files), two-column lines get a third column
    ``Gene Expression`` as Cell Ranger v3 writes. Returns the number of lines.
    """
    lines = 0
    stream = gzip.GzipFile(fileobj=src, mode="rb") if gzipped else src
    with gzip.open(dest, "wb", compresslevel=4) as out:
        if fix_columns:
            for raw in io.TextIOWrapper(stream, encoding="utf-8", newline=""):
                line = raw.rstrip("\r\n")
                if line.count("\t") == 1:
                    line += "\tGene Expression"
                out.write((line + "\n").encode())
                lines += 1
        else:
            for chunk in iter(lambda: stream.read(CHUNK), b""):
                out.write(chunk)
                lines += chunk.count(b"\n")
    return lines


def _mtx_dims(path: Path) -> tuple[int, int]:
    """Return (rows, columns) from a gzipped Matrix Market header."""
    with gzip.open(path, "rt") as fh:
        first = fh.readline()
        if not first.startswith("%%MatrixMarket"):
            raise ValueError("matrix file does not start with %%MatrixMarket")
        for line in fh:
            if not line.startswith("%"):
                rows, cols, _ = (int(x) for x in line.split()[:3])
                return rows, cols
    raise ValueError("matrix file has no size line")


@contextlib.contextmanager
def _open_archive(src: Path, kind: str, sample: str, url: str) -> Iterator[
        tuple[dict[str, Any], Any]]:
    """Yield (regular files by name, opener) for a tar, tar.gz or zip."""
    if kind == "zip":
        with zipfile.ZipFile(src) as zf:
            yield _zip_members(zf, sample, url), zf.open
        return
    with tarfile.open(src, "r:*") as tf:
        yield _tar_members(tf, sample, url), tf.extractfile


def _is_tar(src: Path) -> bool:
    try:
        with tarfile.open(src, "r:*") as tf:
            return tf.next() is not None
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile):
        return False


def _archive_kind(src: Path) -> str:
    kind = sniff(src)
    if kind == "gzip" and _is_tar(src):
        return "tar"
    return kind


def _corrupt(sample: str, url: str, err: BaseException) -> FetchError:
    return FetchError(
        f"sample '{sample}': the file from {url} matches its sha256 but cannot be unpacked "
        f"({type(err).__name__}: {err}); it is truncated or corrupt at the source, or the "
        "sha256 in the sheet was taken from a broken copy. Check the file size and checksum "
        "on the accession page; nothing was written."
    )


@contextlib.contextmanager
def _open_loose(paths: Sequence[str | Path]) -> Iterator[tuple[dict[str, Path], Any]]:
    """Yield (files by name, opener) for loose downloaded files (a GEO sample's 10x files)."""
    yield {Path(p).name: Path(p) for p in paths}, lambda path: open(path, "rb")


def unpack_10x_mtx(src: str | Path | Sequence[str | Path], out_dir: str | Path, *, sample: str,
                   url: str, member: str = "") -> Path:
    """Write a Cell Ranger v3 folder (gzipped matrix, barcodes, features) to ``out_dir``,
    from an archive (``src`` one path) or from the loose 10x files (``src`` several paths).

    The folder appears under its final name only when complete and consistent.
    """
    out_dir = Path(out_dir)
    if isinstance(src, (str, Path)):
        src = Path(src)
        kind = _archive_kind(src)
        if kind not in ("tar", "zip"):
            raise FetchError(
                f"sample '{sample}': format 10x_mtx needs an archive (tar, tar.gz or zip) or "
                f"the three 10x files, but {url} is {kind}. Use format h5ad or 10x_h5 for "
                "single files."
            )
    else:
        kind = "loose"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        try:
            opened = _open_loose(src) if kind == "loose" else _open_archive(src, kind, sample,
                                                                             url)
            with opened as (files, opener):
                chosen = assign_mtx_files(select_members(files, member), sample, url, member)
                counts = {}
                for role, name in chosen.items():
                    gz = name.lower().endswith(".gz")
                    with opener(files[name]) as fh:
                        counts[role] = _write_canonical(
                            fh, tmp / f"{role}.{'mtx' if role == 'matrix' else 'tsv'}.gz",
                            gzipped=gz, fix_columns=role == "features")
            rows, cols = _mtx_dims(tmp / "matrix.mtx.gz")
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, gzip.BadGzipFile,
                UnicodeDecodeError, ValueError, OSError) as err:
            raise _corrupt(sample, url, err) from err
        if (rows, cols) != (counts["features"], counts["barcodes"]):
            raise FetchError(
                f"sample '{sample}': matrix from {url} is {rows} x {cols} but there are "
                f"{counts['features']} features and {counts['barcodes']} barcodes; the files "
                f"{sorted(chosen.values())} do not belong together. Set `member` to one "
                "sample's folder or prefix."
            )
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
        LOG.info("sample %s: wrote %s (%d genes x %d cells) from %s", sample, out_dir, rows,
                 cols, sorted(chosen.values()))
        return out_dir
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def unpack_matrix_file(src: str | Path, out_file: str | Path, *, sample: str, url: str,
                       member: str = "") -> Path:
    """Write an HDF5 file (10x h5 or h5ad) taken from ``src`` as-is, gunzipped or from an
    archive member; it appears under ``out_file`` only when complete and HDF5."""
    src, out_file = Path(src), Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_file.name}.", dir=out_file.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            _copy_matrix_file(src, tmp, sample=sample, url=url, member=member)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, gzip.BadGzipFile,
                OSError) as err:
            raise _corrupt(sample, url, err) from err
        if sniff(tmp) != "hdf5":
            raise FetchError(
                f"sample '{sample}': the file taken from {url} is not HDF5, so it is not a "
                "10x h5 or h5ad. Check the `format` and `member` columns."
            )
        os.replace(tmp, out_file)
        return out_file
    finally:
        tmp.unlink(missing_ok=True)


def _copy_matrix_file(src: Path, tmp: Path, *, sample: str, url: str, member: str) -> None:
    kind = _archive_kind(src)
    if kind in ("hdf5", "other"):
        shutil.copyfile(src, tmp)
    elif kind == "gzip":
        with gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, CHUNK)
    else:
        with _open_archive(src, kind, sample, url) as (files, opener):
            names = [n for n in select_members(files, member)
                     if re.search(r"\.(h5|h5ad|hdf5)(\.gz)?$", n, re.IGNORECASE)]
            if len(names) != 1:
                raise FetchError(
                    f"sample '{sample}': expected one .h5/.h5ad file in the archive from {url} "
                    f"(member '{member or '<all>'}') but found {names or 'none'}. Set `member` "
                    "to the file's path inside the archive."
                )
            with opener(files[names[0]]) as fin, open(tmp, "wb") as fout:
                stream = gzip.GzipFile(fileobj=fin) if names[0].endswith(".gz") else fin
                shutil.copyfileobj(stream, fout, CHUNK)
