"""Fetch public scRNA-seq data safely: download, verify and unpack.

A sample-sheet row with ``url`` + ``sha256`` (instead of ``path``) is turned into a local
path in the layout :func:`mscflow.io.read_sample` reads:

1. ``fetch_url`` downloads the file into a shared cache, ``<cache_dir>/<sha256>/<basename>``.
   The cache is keyed by the checksum, so samples that share one archive (a GEO ``_RAW.tar``)
   download it once, a rerun downloads nothing, and two workflows can share one cache.
2. :func:`unpack` turns the cached file into ``results/fetched/<sample>/10x_mtx`` (a Cell
   Ranger v3 style folder) or ``results/fetched/<sample>/matrix.h5`` / ``matrix.h5ad``,
   with the archive checks of :mod:`mscflow.archives`.

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
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import pandas as pd
import requests
import urllib3

from mscflow.archives import (
    CHUNK,
    HDF5_MAGIC,
    MTX_ROLES,
    FetchError,
    UnsafeArchiveError,
    assign_mtx_files,
    mtx_role,
    select_members,
    sniff,
    unpack_10x_mtx,
    unpack_matrix_file,
)
from mscflow.config import Settings, settings_section
from mscflow.errors import SampleSheetError

__all__ = [
    "CHUNK",
    "FETCHED_DIR",
    "FORMATS",
    "HDF5_MAGIC",
    "MTX_ROLES",
    "RETRY_STATUS",
    "SHA256_RE",
    "ChecksumMismatch",
    "FetchError",
    "FetchSettings",
    "UnsafeArchiveError",
    "UrlSample",
    "assign_mtx_files",
    "backoff_delay",
    "cache_index",
    "check_sha256",
    "check_url",
    "download",
    "fetched_path",
    "main",
    "mtx_role",
    "select_members",
    "sha256_file",
    "sniff",
    "unpack",
    "unpack_10x_mtx",
    "unpack_matrix_file",
    "url_basename",
    "url_sample_from_row",
    "url_samples",
    "urls_for",
]

LOG = logging.getLogger("mscflow.fetch")

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
FORMATS = ("10x_mtx", "10x_h5", "h5ad")
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
FETCHED_DIR = "results/fetched"


class ChecksumMismatch(FetchError):
    """The downloaded bytes do not have the sha256 given in the sample sheet."""


class _Transient(Exception):
    """An attempt failed in a way worth retrying."""


class _Permanent(Exception):
    """An attempt failed in a way that retrying cannot fix."""


# --------------------------------------------------------------------------- settings


@settings_section("fetch")
class FetchSettings(Settings):
    """Download settings: the config section ``fetch`` (keys in the schema; docs/fetching.md)."""


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


def url_samples(sheet: pd.DataFrame | Iterable[Mapping[str, Any]]) -> dict[str, UrlSample]:
    """The url rows of a sample sheet (:func:`mscflow.samplesheet.read_sample_sheet`, or
    row mappings) by sample name, checking that one url has one checksum."""
    rows = sheet.to_dict("records") if isinstance(sheet, pd.DataFrame) else sheet
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


def fetched_path(sample_row: Mapping[str, Any]) -> str:
    """Where the workflow puts a url row's data, in the layout ``read_sample`` reads
    (``results/fetched/<sample>/...``)."""
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


# --------------------------------------------------------------------------- unpack


def unpack(spec: UrlSample, src: str | Path, out: str | Path) -> Path:
    """Unpack a verified download into the layout for ``spec.fmt``."""
    if spec.fmt == "10x_mtx":
        return unpack_10x_mtx(src, out, sample=spec.sample, url=spec.url, member=spec.member)
    return unpack_matrix_file(src, out, sample=spec.sample, url=spec.url, member=spec.member)


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
        settings = FetchSettings.from_config({})
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
