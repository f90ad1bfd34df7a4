"""Fetch public scRNA-seq data safely: download, verify, unpack, and load presets.

A sample-sheet row with ``url`` + ``sha256`` (instead of ``path``) is turned into a local
path in the layout :func:`mscflow.io.read_sample` reads:

1. ``fetch_url`` downloads the file into a shared cache, ``<cache_dir>/<sha256>/<basename>``.
   The cache is keyed by the checksum, so samples that share one archive (a GEO ``_RAW.tar``)
   download it once, a rerun downloads nothing, and two workflows can share one cache.
2. ``unpack_*`` turns the cached file into ``results/fetched/<sample>/10x_mtx`` (a Cell
   Ranger v3 style folder) or ``results/fetched/<sample>/matrix.h5`` / ``matrix.h5ad``.

Why a rule with ``requests`` and not Snakemake's http storage plugin or pooch: the storage
plugin (snakemake-storage-plugin-http) keys its local copy by URL, verifies no checksum,
cannot resume, and would need another package in every environment; pooch verifies
checksums and moves files into place atomically but restarts every retry from byte zero and
does not take a lock, so two runs sharing a cache race each other. ``requests`` is already
a dependency; on top of it this module adds what matters for multi-gigabyte GEO archives:

- the download goes to ``.<basename>.part`` beside the final name, under an exclusive
  ``flock`` so concurrent runs sharing the cache wait instead of racing;
- a failed attempt (timeout, connection cut, 5xx, 408, 429) is retried a bounded number of
  times with exponential backoff, resuming with an HTTP ``Range`` request when the server
  supports it (a server that answers 200 instead of 206 is read again from the start);
- bytes are read with ``decode_content=False`` so a ``Content-Encoding: gzip`` server cannot
  silently change what is hashed, and a short body (fewer bytes than Content-Length) is an
  error, never a success;
- the file is moved to its final name (``os.replace``, atomic) only after its sha256 matches,
  so an interrupted or corrupt download is never read by a later step. A mismatch after a
  fresh download stops with both checksums and the URL; a mismatch after a resumed download
  discards the partial file and downloads again from zero (a stale ``.part`` cannot poison
  the cache); a cached file that no longer matches its checksum is deleted and fetched again;
- 4xx answers other than 408/429 are permanent: no retry, a clear error at once.

Archives (tar, tar.gz, zip) and gzipped single files are recognised by their first bytes,
not by the URL, and every member is checked before anything is read: absolute paths, ``..``,
links pointing outside the archive and special files reject the whole archive
(``tarfile.data_filter``, the check behind ``filter="data"``; the same rules for zip). Only
regular files are streamed out, to names this module chooses, so no archive path is ever
used as a file-system path. GEO-style prefixes (``GSM123_ctrl_barcodes.tsv.gz``) are
stripped, legacy ``genes.tsv`` becomes ``features.tsv.gz`` with a ``Gene Expression``
column, and the three files are gzipped so the v3 reader applies to every folder.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import gzip
import hashlib
import io
import logging
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import requests
import urllib3
import yaml

LOG = logging.getLogger("mscflow.fetch")

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
PRESET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
FORMATS = ("10x_mtx", "10x_h5", "h5ad")
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
FETCHED_DIR = "results/fetched"
CHUNK = 1 << 20
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
MTX_ROLES = ("matrix", "barcodes", "features")
_ROLE_RE = re.compile(
    r"(?:^|[_.\-])(matrix\.mtx|barcodes\.tsv|features\.tsv|genes\.tsv)(\.gz)?$", re.IGNORECASE
)


class FetchError(RuntimeError):
    """A download or unpack failed; the message names the sample, the URL and the fix."""


class ChecksumMismatch(FetchError):
    """The downloaded bytes do not have the sha256 given in the sample sheet."""


class UnsafeArchiveError(FetchError):
    """An archive member would escape the target folder or is a link or device."""


class SampleSheetError(ValueError):
    """A url row of the sample sheet is malformed."""


class _Transient(Exception):
    """An attempt failed in a way worth retrying."""


class _Permanent(Exception):
    """An attempt failed in a way that retrying cannot fix."""


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class FetchSettings:
    """Download settings, from the ``fetch:`` block of the workflow config."""

    cache_dir: Path = Path("resources/cache")
    retries: int = 4
    backoff_s: float = 2.0
    max_backoff_s: float = 60.0
    connect_timeout_s: float = 30.0
    read_timeout_s: float = 300.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FetchSettings:
        """Build settings from ``config["fetch"]``, keeping defaults for missing keys."""
        block = dict(config.get("fetch") or {})
        unknown = set(block) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(
                f"unknown key(s) {sorted(unknown)} under `fetch:` in the config; allowed: "
                f"{sorted(cls.__dataclass_fields__)}"
            )
        if "cache_dir" in block:
            block["cache_dir"] = Path(block["cache_dir"])
        settings = cls(**block)
        if settings.retries < 1:
            raise ValueError("config fetch.retries must be >= 1 (the number of attempts)")
        return settings


@dataclass(frozen=True)
class UrlSample:
    """One sample-sheet row that is fetched from a URL."""

    sample: str
    url: str
    sha256: str
    fmt: str
    member: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False)


# --------------------------------------------------------------------------- sample sheet


def url_basename(url: str) -> str:
    """Return a safe file name for ``url`` (its last path part, else ``download``)."""
    name = unquote(PurePosixPath(urlsplit(url).path).name)
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", name).lstrip(".")
    return name or "download"


def check_url(url: str, sample: str) -> str:
    """Return ``url`` if it is http(s) with a host, else raise :class:`SampleSheetError`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SampleSheetError(
            f"sample '{sample}': url '{url}' is not an http(s) URL. Give the full "
            "https://... address of the file in the `url` column."
        )
    return url


def check_sha256(sha256: str, sample: str, url: str) -> str:
    """Return the lower-cased sha256 if it is 64 hex digits, else raise."""
    value = (sha256 or "").strip().lower()
    if not SHA256_RE.match(value):
        raise SampleSheetError(
            f"sample '{sample}': sha256 '{sha256}' for {url} is not 64 hex digits. Every url "
            "row needs the file's sha256; if the preset says TO_VERIFY, run `python -m "
            f"mscflow.fetch hash {url}` once, check the file, and write the printed value "
            "into the sheet."
        )
    return value


def read_sheet(path: str | Path) -> list[dict[str, str]]:
    """Read a tab-separated sample sheet (``#`` lines are comments) into row dicts."""
    with open(path, newline="") as fh:
        lines = [ln for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
    return [
        {k.strip(): (v or "").strip() for k, v in row.items() if k}
        for row in csv.DictReader(lines, delimiter="\t")
    ]


def url_sample_from_row(row: Mapping[str, Any]) -> UrlSample:
    """Validate one url row (``sample``, ``url``, ``sha256``, ``format``, ``member``)."""
    sample = str(row.get("sample") or "").strip()
    if not sample:
        raise SampleSheetError(f"a url row has no `sample` name: {dict(row)}")
    url = check_url(str(row.get("url") or "").strip(), sample)
    if str(row.get("path") or "").strip():
        raise SampleSheetError(
            f"sample '{sample}': both `path` and `url` are set; keep one of them."
        )
    sha = check_sha256(str(row.get("sha256") or ""), sample, url)
    fmt = str(row.get("format") or "").strip()
    if fmt not in FORMATS:
        raise SampleSheetError(
            f"sample '{sample}': format '{fmt}' for {url} is not one of {FORMATS}; set the "
            "`format` column to what the download holds."
        )
    member = str(row.get("member") or "").strip()
    if member.upper() == "TO_VERIFY":
        raise SampleSheetError(
            f"sample '{sample}': member is TO_VERIFY for {url}; list the archive "
            "(`tar tf` / `unzip -l`) and write the sample's folder or file prefix."
        )
    return UrlSample(sample, url, sha, fmt, member)


def url_samples(rows: Iterable[Mapping[str, Any]]) -> dict[str, UrlSample]:
    """Return the url rows of a sample sheet by sample name, checking consistency."""
    out: dict[str, UrlSample] = {}
    sha_of_url: dict[str, str] = {}
    for row in rows:
        if not str(row.get("url") or "").strip():
            continue
        spec = url_sample_from_row(row)
        if spec.sample in out:
            raise SampleSheetError(f"sample '{spec.sample}' appears twice in the sample sheet")
        if sha_of_url.setdefault(spec.url, spec.sha256) != spec.sha256:
            raise SampleSheetError(
                f"url {spec.url} is listed with two different sha256 values "
                f"({sha_of_url[spec.url]} and {spec.sha256}, sample '{spec.sample}'); one "
                "file has one checksum, fix the sheet."
            )
        out[spec.sample] = spec
    return out


def cache_index(specs: Mapping[str, UrlSample], cache_dir: str | Path) -> dict[str, Path]:
    """Map each sha256 to its cache path; the first sample's URL names the file."""
    index: dict[str, Path] = {}
    for spec in specs.values():
        index.setdefault(spec.sha256, Path(cache_dir) / spec.sha256 / url_basename(spec.url))
    return index


def urls_for(specs: Mapping[str, UrlSample], sha256: str) -> list[str]:
    """Return the distinct URLs (mirrors) listed for one sha256, in sheet order."""
    urls = list(dict.fromkeys(s.url for s in specs.values() if s.sha256 == sha256))
    if not urls:
        raise KeyError(f"no url row in the sample sheet has sha256 {sha256}")
    return urls


def fetched_path(sample_row: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """Return where the workflow puts a url row's data, in the layout ``read_sample`` reads.

    ``config`` is accepted so the layout can follow config later; today it is fixed under
    ``results/fetched/<sample>/``.
    """
    del config
    spec = url_sample_from_row(sample_row)
    base = f"{FETCHED_DIR}/{spec.sample}"
    return {
        "10x_mtx": f"{base}/10x_mtx",
        "10x_h5": f"{base}/matrix.h5",
        "h5ad": f"{base}/matrix.h5ad",
    }[spec.fmt]


# --------------------------------------------------------------------------- download


def sha256_file(path: str | Path) -> str:
    """Return the hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created if missing)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def backoff_delay(attempt: int, base_s: float, cap_s: float) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): base * 2**(n-1), capped."""
    return min(cap_s, base_s * (2 ** (attempt - 1)))


def _content_range_start(header: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-\d+/(?:\d+|\*)", header or "")
    return int(match.group(1)) if match else None


def _download_once(session: requests.Session, url: str, part: Path,
                   settings: FetchSettings) -> bool:
    """Make one attempt to complete ``part``; return True if it resumed earlier bytes."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    timeout = (settings.connect_timeout_s, settings.read_timeout_s)
    with session.get(url, stream=True, timeout=timeout, headers=headers) as resp:
        code = resp.status_code
        if code == 416 and offset:
            part.unlink()
            raise _Transient("server refused the resume range (416); starting again from zero")
        if code in RETRY_STATUS:
            raise _Transient(f"HTTP {code} {resp.reason}")
        if code >= 400:
            raise _Permanent(f"HTTP {code} {resp.reason}")
        resumed = code == 206 and _content_range_start(resp.headers.get("Content-Range")) == offset
        if code == 206 and not resumed:
            part.unlink(missing_ok=True)
            raise _Transient("server answered a range that was not asked for")
        expected = resp.headers.get("Content-Length")
        written = 0
        with open(part, "ab" if resumed else "wb") as fh:
            for chunk in resp.raw.stream(CHUNK, decode_content=False):
                fh.write(chunk)
                written += len(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        if expected is not None and written != int(expected):
            raise _Transient(f"connection ended after {written} of {expected} bytes")
        return resumed and offset > 0


def download(urls: str | list[str], dest: str | Path, sha256: str, *, sample: str,
             settings: FetchSettings, session: requests.Session | None = None) -> Path:
    """Download to ``dest`` (final name only once the sha256 matches); return ``dest``.

    ``urls`` may list mirrors of one file; each attempt uses the next one. An existing
    ``dest`` whose checksum matches is returned without any request.
    """
    urls = [urls] if isinstance(urls, str) else list(urls)
    sha256 = check_sha256(sha256, sample, urls[0])
    dest = Path(dest)
    part = dest.with_name(f".{dest.name}.part")
    own_session = session is None
    session = session or requests.Session()
    try:
        with _locked(dest.with_name(f".{dest.name}.lock")):
            if dest.exists():
                if sha256_file(dest) == sha256:
                    LOG.info("sample %s: %s already in the cache, nothing to download",
                             sample, dest)
                    return dest
                LOG.warning("sample %s: cached %s does not match its sha256; fetching again",
                            sample, dest)
                dest.unlink()
            return _download_attempts(session, urls, dest, part, sha256, sample, settings)
    finally:
        if own_session:
            session.close()


def _download_attempts(session: requests.Session, urls: list[str], dest: Path, part: Path,
                       sha256: str, sample: str, settings: FetchSettings) -> Path:
    errors: list[str] = []
    for attempt in range(1, settings.retries + 1):
        url = urls[(attempt - 1) % len(urls)]
        LOG.info("sample %s: attempt %d/%d: %s", sample, attempt, settings.retries, url)
        try:
            resumed = _download_once(session, url, part, settings)
        except _Permanent as err:
            part.unlink(missing_ok=True)
            raise FetchError(
                f"sample '{sample}': download of {url} failed with {err}; not retried "
                "because the server says the file is not there or not allowed. Check the "
                "`url` column (copy it from the accession page) and rerun."
            ) from err
        except (_Transient, requests.RequestException, urllib3.exceptions.HTTPError,
                OSError) as err:
            errors.append(f"attempt {attempt} ({url}): {type(err).__name__}: {err}")
            LOG.warning("sample %s: %s", sample, errors[-1])
        else:
            got = sha256_file(part)
            size = part.stat().st_size
            if got == sha256:
                os.replace(part, dest)
                LOG.info("sample %s: %s verified (sha256 %s)", sample, dest, got)
                return dest
            part.unlink()
            if not resumed:
                raise ChecksumMismatch(
                    f"sample '{sample}': checksum mismatch for {url}\n  expected sha256 "
                    f"{sha256} (sample sheet)\n  got      sha256 {got} (downloaded, "
                    f"{size} bytes)\nThe file was deleted; nothing was cached. If the "
                    "source changed the file on purpose, check it and put the new sha256 in "
                    "the sheet; otherwise the URL points at a different file."
                )
            errors.append(f"attempt {attempt} ({url}): resumed file had sha256 {got}; "
                          "discarded, next attempt starts from zero")
            LOG.warning("sample %s: %s", sample, errors[-1])
        if attempt < settings.retries:
            time.sleep(backoff_delay(attempt, settings.backoff_s, settings.max_backoff_s))
    raise FetchError(
        f"sample '{sample}': could not download {' or '.join(urls)} after "
        f"{settings.retries} attempts:\n  " + "\n  ".join(errors) + "\nThe partial file "
        f"{part.name} is kept so the next run resumes it; it is never read as data. Rerun "
        "later, or raise fetch.retries / fetch.read_timeout_s in the config."
    )


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


def unpack_10x_mtx(src: str | Path, out_dir: str | Path, *, sample: str, url: str,
                   member: str = "") -> Path:
    """Write a Cell Ranger v3 folder (gzipped matrix, barcodes, features) to ``out_dir``.

    The folder appears under its final name only when complete and consistent.
    """
    src, out_dir = Path(src), Path(out_dir)
    kind = _archive_kind(src)
    if kind not in ("tar", "zip"):
        raise FetchError(
            f"sample '{sample}': format 10x_mtx needs an archive (tar, tar.gz or zip) but "
            f"{url} is {kind}. Use format h5ad or 10x_h5 for single files, or list the "
            "three 10x files' archive instead."
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        try:
            with _open_archive(src, kind, sample, url) as (files, opener):
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


def unpack(spec: UrlSample, src: str | Path, out: str | Path) -> Path:
    """Unpack a verified download into the layout for ``spec.fmt``."""
    if spec.fmt == "10x_mtx":
        return unpack_10x_mtx(src, out, sample=spec.sample, url=spec.url, member=spec.member)
    return unpack_matrix_file(src, out, sample=spec.sample, url=spec.url, member=spec.member)


# --------------------------------------------------------------------------- presets


def list_presets(presets_dir: str | Path) -> list[str]:
    """Return the names of the preset folders (those holding a ``samples.tsv``)."""
    root = Path(presets_dir)
    return sorted(p.name for p in root.iterdir() if (p / "samples.tsv").is_file()) \
        if root.is_dir() else []


def load_preset(name: str, presets_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """Return (sample sheet path, config overrides) of preset ``name``.

    A preset is ``<presets_dir>/<name>/`` with ``samples.tsv`` and an optional
    ``config.yaml`` whose mapping overrides the workflow's defaults.
    """
    if not PRESET_NAME_RE.match(name or ""):
        raise ValueError(f"preset name '{name}' may only hold letters, digits, '.', '_', '-'")
    folder = Path(presets_dir) / name
    samples = folder / "samples.tsv"
    if not samples.is_file():
        raise FileNotFoundError(
            f"preset '{name}' not found: no {samples}. Available presets: "
            f"{', '.join(list_presets(presets_dir)) or 'none'}."
        )
    overrides: dict[str, Any] = {}
    cfg = folder / "config.yaml"
    if cfg.is_file():
        loaded = yaml.safe_load(cfg.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{cfg} must hold a mapping of config keys")
        for key in ("preset", "samples"):
            if key in loaded:
                raise ValueError(f"{cfg} must not set `{key}`; the preset itself decides it")
        overrides = loaded
    return samples.resolve(), overrides


def _deep_update(base: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_update(dict(out[key]), value)
        else:
            out[key] = value
    return out


def apply_preset(config: Mapping[str, Any], presets_dir: str | Path,
                 cli_overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return ``config`` with ``config["preset"]`` applied: defaults < preset < command line.

    Without a preset the config is returned unchanged (as a new dict).
    """
    name = config.get("preset")
    if not name:
        return dict(config)
    samples, overrides = load_preset(str(name), presets_dir)
    merged = _deep_update(dict(config), overrides)
    merged = _deep_update(merged, cli_overrides or {})
    merged["samples"] = str(samples)
    return merged


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """``python -m mscflow.fetch hash URL``: download once and print the file's sha256."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mscflow.fetch")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_hash = sub.add_parser("hash", help="download URL to a temporary file and print sha256")
    p_hash.add_argument("url")
    args = parser.parse_args(argv)
    check_url(args.url, "<command line>")
    with tempfile.TemporaryDirectory() as tmp, requests.Session() as session:
        part = Path(tmp) / "download"
        settings = FetchSettings()
        for attempt in range(1, settings.retries + 1):
            try:
                _download_once(session, args.url, part, settings)
                break
            except _Permanent as err:
                raise SystemExit(f"{args.url}: {err}") from err
            except (_Transient, requests.RequestException, urllib3.exceptions.HTTPError) as e:
                if attempt == settings.retries:
                    raise SystemExit(f"{args.url}: {e}") from e
                time.sleep(backoff_delay(attempt, settings.backoff_s, settings.max_backoff_s))
        print(f"{sha256_file(part)}  {part.stat().st_size} bytes  {args.url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
