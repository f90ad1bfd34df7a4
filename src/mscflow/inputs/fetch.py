"""Fetch public scRNA-seq data safely: download, verify and unpack.

A sample-sheet row with ``url`` (instead of ``path``) becomes a local path in the layout
:func:`mscflow.io.read_sample` reads. Rule ``fetch_url`` downloads each file into a shared
cache, ``<cache_dir>/<key>/<basename>``: the key is the sheet's sha256 (a shared ``_RAW.tar``
is downloaded once, a rerun downloads nothing, workflows can share the cache), or, for the
files of a preset (:mod:`mscflow.inputs.presets`), ``url-<digest of the URL>`` with the sha256
pinned in the preset's ``lock.tsv`` on first download (:mod:`mscflow.inputs.lockfile`).
:func:`unpack` then writes ``results/fetched/<sample>/10x_mtx`` (from an archive or three
loose 10x files), ``matrix.h5`` or ``matrix.h5ad`` with the checks of
:mod:`mscflow.inputs.archives`.

Why ``requests`` and not pooch or Snakemake's http storage plugin. The plugin keys its copy
by URL, verifies no checksum and cannot resume. Pooch 1.9, run against the fault server of
``tests/test_fetch.py``, retried a 404 four times, downloaded a file with a wrong checksum
four times before failing, restarted a cut download from byte zero (no ``Range``), hashed
the *decoded* body of a ``Content-Encoding: gzip`` answer, waits a fixed 1, 2, 3 s between
attempts and takes no lock, so two runs sharing a cache race. Its useful parts (known
hashes, cache, atomic move, tqdm bar) are a few lines each here; wrapping it would keep all
of the retry logic below and add a dependency. What this module guarantees (docs/fetching.md
lists each outcome and its test):

- downloads go to ``.<name>.part`` under an exclusive ``flock`` (runs sharing a cache wait);
- timeouts, cut connections, 5xx, 408 and 429 are retried with exponential backoff, resuming
  with ``Range`` (a server answering 200 is read again from the start); other 4xx stop at once;
- bytes are read with ``decode_content=False`` and a short body is an error, so what is
  hashed is what the server stored;
- the file gets its final name (``os.replace``) only once its sha256 matches the sheet or
  the lock; a fresh mismatch stops with both digests, a resumed one restarts from zero, a
  cached file that no longer matches is fetched again;
- an unreachable host (name resolution, refused) ends in one line naming host and file;
- long downloads log a tqdm bar (size, rate, time left) to the job's log;
- ``fetch.mirrors`` rewrites URL prefixes (a local mirror, the tests' loopback server);
  cache keys and pins keep the public URL.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import pandas as pd
import requests
import urllib3

from mscflow.config import Settings, settings_section
from mscflow.errors import SampleSheetError
from mscflow.inputs.archives import (
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
from mscflow.inputs.lockfile import LockFile, Pin, check_cached, sha256_file, write_stamp

__all__ = [
    "CHUNK", "FETCHED_DIR", "FORMATS", "HDF5_MAGIC", "MTX_ROLES", "RETRY_STATUS", "SHA256_RE",
    "ChecksumMismatch", "FetchError", "FetchSettings", "HostUnreachable", "RemoteFile",
    "UnsafeArchiveError", "UrlSample", "assign_mtx_files", "backoff_delay", "cache_index",
    "check_sha256", "check_url", "download", "fetch_file", "fetched_path", "mtx_role",
    "rewrite_url", "samples_for", "select_members", "sha256_file", "sniff", "unpack",
    "unpack_10x_mtx", "unpack_matrix_file", "url_basename", "url_key", "url_sample_from_row",
    "url_samples", "urls_for",
]

LOG = logging.getLogger("mscflow.inputs.fetch")

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
URL_KEY_RE = re.compile(r"^url-[0-9a-f]{24}$")
FORMATS = ("10x_mtx", "10x_h5", "h5ad")
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
FETCHED_DIR = "results/fetched"
# A progress line appears only for downloads still running after PROGRESS_DELAY_S, then at
# most every PROGRESS_INTERVAL_S (a job log, not a terminal: one line per refresh).
PROGRESS_DELAY_S = 10.0
PROGRESS_INTERVAL_S = 30.0


class ChecksumMismatch(FetchError):
    """The downloaded bytes do not have the sha256 given in the sheet or pinned in the lock."""


class HostUnreachable(FetchError):
    """The host of a URL could not be reached at all (offline, DNS, refused)."""


class _Transient(Exception):
    """An attempt failed in a way worth retrying."""


class _Permanent(Exception):
    """An attempt failed in a way that retrying cannot fix."""


# --------------------------------------------------------------------------- settings


@settings_section("fetch")
class FetchSettings(Settings):
    """Download settings: the config section ``fetch`` (keys in the schema; docs/fetching.md)."""


def rewrite_url(url: str, mirrors: Mapping[str, str] | None) -> str:
    """``url`` with the longest matching prefix of ``mirrors`` replaced (``fetch.mirrors``)."""
    for prefix in sorted(mirrors or {}, key=len, reverse=True):
        if url.startswith(prefix):
            return mirrors[prefix] + url[len(prefix):]
    return url


# --------------------------------------------------------------------------- sample sheet


@dataclass(frozen=True)
class RemoteFile:
    """One file to download: its public URL and, for sheet rows, its sha256."""

    url: str
    sha256: str = ""  # empty: verified against the preset's lock (pinned on first download)

    @property
    def key(self) -> str:
        """Cache folder name: the sha256, else ``url-<digest>`` of the URL."""
        return self.sha256 or url_key(self.url)

    @property
    def name(self) -> str:
        """File name in the cache."""
        return url_basename(self.url)


@dataclass(frozen=True)
class UrlSample:
    """One sample-sheet row that is fetched: one URL (an archive or a single file) or, from
    a resolved preset, several (e.g. the three 10x files of a GEO sample), space-separated."""

    sample: str
    url: str
    sha256: str
    fmt: str
    member: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def urls(self) -> list[str]:
        """The row's URLs in sheet order."""
        return self.url.split()

    @property
    def files(self) -> tuple[RemoteFile, ...]:
        """The files to download for this sample."""
        return tuple(RemoteFile(u, self.sha256) for u in self.urls)


def url_basename(url: str) -> str:
    """Return a safe file name for ``url`` (its last path part, else ``download``)."""
    name = unquote(PurePosixPath(urlsplit(url).path).name)
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", name).lstrip(".")
    return name or "download"


def url_key(url: str) -> str:
    """Cache folder of a file known by its URL only (a preset's file)."""
    return "url-" + hashlib.sha256(url.encode()).hexdigest()[:24]


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
            "row of a sample sheet needs the file's sha256: run "
            "`python -m mscflow.inputs.fetch hash URL` once, check the file, and write the "
            "printed value into the sheet (presets pin theirs in lock.tsv on first download "
            "instead)."
        )
    return value


def url_sample_from_row(row: Mapping[str, Any], *, pinned_by_lock: bool = False) -> UrlSample:
    """Validate one url row (``sample``, ``url``, ``sha256``, ``format``, ``member``).

    ``pinned_by_lock`` (rows a preset resolved): the sha256 may be empty and several
    space-separated URLs are allowed; the lock holds their checksums.
    """
    sample = str(row.get("sample") or "").strip()
    if not sample:
        raise SampleSheetError(f"a url row has no `sample` name: {dict(row)}")
    urls = str(row.get("url") or "").split()
    for url in urls or [""]:
        check_url(url, sample)
    if str(row.get("path") or "").strip():
        raise SampleSheetError(
            f"sample '{sample}': both `path` and `url` are set; keep one of them."
        )
    sha = str(row.get("sha256") or "").strip()
    if len(urls) > 1 and not pinned_by_lock:
        raise SampleSheetError(
            f"sample '{sample}': the `url` column holds {len(urls)} URLs; a sample sheet "
            "row takes one file (an archive or a single file) with its sha256."
        )
    if sha or not pinned_by_lock:
        sha = check_sha256(sha, sample, urls[0])
    fmt = str(row.get("format") or "").strip()
    if fmt not in FORMATS:
        raise SampleSheetError(
            f"sample '{sample}': format '{fmt}' for {urls[0]} is not one of {FORMATS}; set "
            "the `format` column to what the download holds."
        )
    member = str(row.get("member") or "").strip()
    return UrlSample(sample, " ".join(urls), sha, fmt, member)


def url_samples(sheet: pd.DataFrame | Iterable[Mapping[str, Any]], *,
                pinned_by_lock: bool = False) -> dict[str, UrlSample]:
    """The url rows of a sample sheet (:func:`mscflow.inputs.samplesheet.read_sample_sheet`, or
    row mappings) by sample name, checking that one url has one checksum."""
    rows = sheet.to_dict("records") if isinstance(sheet, pd.DataFrame) else sheet
    out: dict[str, UrlSample] = {}
    sha_of_url: dict[str, str] = {}
    for row in rows:
        if not str(row.get("url") or "").strip():
            continue
        spec = url_sample_from_row(row, pinned_by_lock=pinned_by_lock)
        if spec.sample in out:
            raise SampleSheetError(f"sample '{spec.sample}' appears twice in the sample sheet")
        for url in spec.urls:
            if sha_of_url.setdefault(url, spec.sha256) != spec.sha256:
                raise SampleSheetError(
                    f"url {url} is listed with two different sha256 values "
                    f"({sha_of_url[url]} and {spec.sha256}, sample '{spec.sample}'); one "
                    "file has one checksum, fix the sheet."
                )
        out[spec.sample] = spec
    return out


def cache_index(specs: Mapping[str, UrlSample], cache_dir: str | Path) -> dict[str, Path]:
    """Map each cache key to its cache path; the first URL with that key names the file."""
    index: dict[str, Path] = {}
    for spec in specs.values():
        for remote in spec.files:
            index.setdefault(remote.key, Path(cache_dir) / remote.key / remote.name)
    return index


def urls_for(specs: Mapping[str, UrlSample], key: str) -> list[str]:
    """Return the distinct URLs (mirrors) listed for one cache key, in sheet order."""
    urls = list(dict.fromkeys(f.url for s in specs.values() for f in s.files if f.key == key))
    if not urls:
        raise KeyError(f"no url row in the sample sheet has a file with cache key {key}")
    return urls


def samples_for(specs: Mapping[str, UrlSample], key: str) -> list[str]:
    """The samples that need the file with cache key ``key``."""
    return sorted(s.sample for s in specs.values() if any(f.key == key for f in s.files))


def fetched_path(sample_row: Mapping[str, Any] | UrlSample) -> str:
    """Where the workflow puts a url row's data, in the layout ``read_sample`` reads
    (``results/fetched/<sample>/...``)."""
    if isinstance(sample_row, UrlSample):
        sample, fmt = sample_row.sample, sample_row.fmt
    else:
        sample, fmt = str(sample_row["sample"]), str(sample_row["format"])
    if fmt not in FORMATS:
        raise SampleSheetError(f"sample '{sample}': format '{fmt}' is not one of {FORMATS}")
    base = f"{FETCHED_DIR}/{sample}"
    return {"10x_mtx": f"{base}/10x_mtx", "10x_h5": f"{base}/matrix.h5",
            "h5ad": f"{base}/matrix.h5ad"}[fmt]


# --------------------------------------------------------------------------- download


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


class _LogLines:
    """A file-like target for tqdm: each refresh of the bar becomes one log line."""

    def write(self, text: str) -> None:
        text = text.strip("\r\n ")
        if text:
            LOG.info("%s", text)

    def flush(self) -> None:
        pass


def _progress(name: str, total: int | None, initial: int) -> Any:
    """A tqdm bar (size, rate, time left) logged for downloads that take a while."""
    from tqdm import tqdm  # light; only the download job needs it

    return tqdm(total=total, initial=initial, desc=name, unit="B", unit_scale=True,
                unit_divisor=1024, file=_LogLines(), ascii=True, ncols=100,
                delay=PROGRESS_DELAY_S, mininterval=PROGRESS_INTERVAL_S)


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
        start = offset if resumed else 0
        total = start + int(expected) if expected is not None else None
        written = 0
        with open(part, "ab" if resumed else "wb") as fh, \
                _progress(url_basename(url), total, start) as bar:
            for chunk in resp.raw.stream(CHUNK, decode_content=False):
                fh.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
            fh.flush()
            os.fsync(fh.fileno())
        if expected is not None and written != int(expected):
            raise _Transient(f"connection ended after {written} of {expected} bytes")
        return resumed and offset > 0


def _unreachable_reason(err: BaseException) -> str | None:
    """Why a host could not be reached at all, or None for other failures."""
    if not isinstance(err, requests.ConnectionError) or isinstance(err, requests.ReadTimeout):
        return None
    reason = getattr(err.args[0], "reason", None) if err.args else None
    if isinstance(reason, urllib3.exceptions.NameResolutionError):
        return "its name does not resolve"
    if isinstance(reason, urllib3.exceptions.ConnectTimeoutError):
        return "the connection timed out"
    if isinstance(reason, urllib3.exceptions.NewConnectionError):
        return "the connection was refused"
    return None


@dataclass
class _Target:
    """What one download must produce and how it is verified."""

    dest: Path
    what: str  # "sample 'x'" or "preset y: series matrix", for messages
    sha256: str | None  # expected (the sheet's or the lock's pin); None: not pinned yet
    lock: LockFile | None
    lock_url: str
    pin: Pin | None = None


def download(urls: str | Sequence[str], dest: str | Path, sha256: str | None = None, *,
             sample: str, settings: FetchSettings, session: requests.Session | None = None,
             lock: LockFile | None = None, refresh: bool = False,
             label: str | None = None) -> Path:
    """Download to ``dest`` (final name only once verified); return ``dest``.

    ``urls`` may list mirrors of one file; each attempt uses the next one (after
    ``fetch.mirrors`` rewrites them). The bytes are verified against ``sha256`` or, with a
    ``lock``, against the pin of ``urls[0]`` (pinned on this first download when missing).
    With neither (record metadata), an existing ``dest`` is reused unless ``refresh``.
    Messages name ``sample`` (or ``label``, e.g. several samples or a preset's record).
    """
    urls = [urls] if isinstance(urls, str) else list(urls)
    if lock is None and sha256 is not None:
        sha256 = check_sha256(sha256, sample, urls[0])
    dest = Path(dest)
    part = dest.with_name(f".{dest.name}.part")
    own_session = session is None
    session = session or requests.Session()
    what = label or f"sample '{sample}'"
    try:
        with _locked(dest.with_name(f".{dest.name}.lock")):
            target = _Target(dest, what, sha256, lock, urls[0])
            if lock is not None:  # read under the file's flock: a parallel run may have pinned
                target.pin = lock.get(urls[0])
                target.sha256 = target.pin.sha256 if target.pin else None
            if dest.exists() and not refresh:
                if _cached_ok(target):
                    LOG.info("%s: %s already in the cache, nothing to download", what, dest)
                    return dest
                LOG.warning("%s: cached %s does not match its sha256; fetching again",
                            what, dest)
                dest.unlink(missing_ok=True)
            mirrored = [rewrite_url(u, settings.mirrors) for u in urls]
            return _download_attempts(session, mirrored, part, target, settings)
    finally:
        if own_session:
            session.close()


def _cached_ok(target: _Target) -> bool:
    """Whether the cached ``dest`` can be used as it is: metadata always, a sheet file when
    its sha256 matches, a preset file when the lock verifies (or pins) it."""
    if target.lock is not None:
        return check_cached(target.dest, target.lock, target.lock_url) in ("verified", "pinned")
    return target.sha256 is None or sha256_file(target.dest) == target.sha256


def _download_attempts(session: requests.Session, urls: list[str], part: Path,
                       target: _Target, settings: FetchSettings) -> Path:
    errors: list[str] = []
    unreachable: str | None = None
    for attempt in range(1, settings.retries + 1):
        url = urls[(attempt - 1) % len(urls)]
        LOG.info("%s: attempt %d/%d: %s", target.what, attempt, settings.retries, url)
        try:
            resumed = _download_once(session, url, part, settings)
        except _Permanent as err:
            part.unlink(missing_ok=True)
            raise FetchError(
                f"{target.what}: download of {url} failed with {err}; not retried because the "
                "server says the file is not there or not allowed. Check the `url` column "
                "(copy it from the accession page), or the preset's accession, and rerun."
            ) from err
        except (_Transient, requests.RequestException, urllib3.exceptions.HTTPError,
                OSError) as err:
            unreachable = _unreachable_reason(err)
            errors.append(f"attempt {attempt} ({url}): {type(err).__name__}: {err}")
            LOG.warning("%s: %s", target.what, errors[-1] if not unreachable else
                        f"attempt {attempt}/{settings.retries}: cannot reach "
                        f"{urlsplit(url).netloc} ({unreachable})")
        else:
            if _accept(part, target, url, resumed, settings):
                return target.dest
            errors.append(f"attempt {attempt} ({url}): resumed file did not match its "
                          "sha256; discarded, next attempt starts from zero")
            LOG.warning("%s: %s", target.what, errors[-1])
        if attempt < settings.retries:
            time.sleep(backoff_delay(attempt, settings.backoff_s, settings.max_backoff_s))
    if unreachable:
        host = urlsplit(urls[-1]).netloc
        raise HostUnreachable(
            f"cannot reach {host} ({unreachable}, {settings.retries} attempts): {target.what} "
            f"needs {urls[-1]}. Check the network or proxy and rerun (fetch.mirrors can point "
            "the host at a mirror)."
        )
    raise FetchError(
        f"{target.what}: could not download {' or '.join(urls)} after "
        f"{settings.retries} attempts:\n  " + "\n  ".join(errors) + "\nThe partial file "
        f"{part.name} is kept so the next run resumes it; it is never read as data. Rerun "
        "later, or raise fetch.retries / fetch.read_timeout_s in the config."
    )


def _accept(part: Path, target: _Target, url: str, resumed: bool,
            settings: FetchSettings) -> bool:
    """Verify a complete ``part`` and move it into place; False: discard it and try again."""
    got = sha256_file(part)
    size = part.stat().st_size
    expected = target.sha256
    if target.lock is not None and expected is None:  # first download: pin it
        pin = target.lock.pin(target.lock_url, target.dest.name, size, got)
        LOG.info("%s: pinned %s (%d bytes, sha256 %s) in %s", target.what, target.dest.name,
                 size, got, target.lock.path)
        target.pin, expected = pin, pin.sha256
    if expected is not None and got != expected:
        if target.lock is not None and settings.update_lock and not resumed:
            target.lock.pin(target.lock_url, target.dest.name, size, got, replace=True)
            LOG.warning("%s: %s changed at the source; fetch.update_lock: pin replaced in %s "
                        "(sha256 %s -> %s)", target.what, target.dest.name, target.lock.path,
                        expected, got)
        else:
            part.unlink()
            if resumed:
                return False
            raise ChecksumMismatch(_mismatch_message(target, url, got, size))
    if target.lock is not None:
        write_stamp(part, got, stamp_for=target.dest)
    os.replace(part, target.dest)
    LOG.info("%s: %s verified (sha256 %s)", target.what, target.dest, got)
    return True


def _mismatch_message(target: _Target, url: str, got: str, size: int) -> str:
    if target.lock is not None and target.pin is not None:
        pin = target.pin
        return (
            f"{target.what}: remote file {target.dest.name} changed since it was pinned: "
            f"{target.lock.path} pins sha256 {pin.sha256} ({pin.size} bytes, {pin.pinned}), "
            f"the download from {url} has sha256 {got} ({size} bytes). Nothing was cached and "
            "the lock is unchanged. If the record was updated on purpose, check it and rerun "
            "with --config fetch='{update_lock: true}'."
        )
    return (
        f"{target.what}: checksum mismatch for {url}\n  expected sha256 {target.sha256} "
        f"(sample sheet)\n  got      sha256 {got} (downloaded, {size} bytes)\nThe file was "
        "deleted; nothing was cached. If the source changed the file on purpose, check it and "
        "put the new sha256 in the sheet; otherwise the URL points at a different file."
    )


def fetch_file(urls: Sequence[str], dest: str | Path, key: str, *, lock_path: str | Path,
               samples: Sequence[str], settings: FetchSettings) -> Path:
    """What rule ``fetch_url`` does: download one cache file, verified by its key (a sha256)
    or, for a preset's file (key ``url-...``), by the preset's lock."""
    lock = LockFile(lock_path) if URL_KEY_RE.match(key) and lock_path else None
    label = None if len(samples) == 1 else "samples " + ", ".join(f"'{s}'" for s in samples)
    return download(list(urls), dest, None if lock else key, sample=",".join(samples),
                    settings=settings, lock=lock, label=label)


# --------------------------------------------------------------------------- unpack


def unpack(spec: UrlSample, src: str | Path | Sequence[str | Path], out: str | Path) -> Path:
    """Unpack verified download(s) into the layout for ``spec.fmt``."""
    if not isinstance(src, (str, Path)) and len(src) == 1:
        src = src[0]
    if spec.fmt == "10x_mtx":
        return unpack_10x_mtx(src, out, sample=spec.sample, url=spec.url, member=spec.member)
    if not isinstance(src, (str, Path)):
        raise FetchError(
            f"sample '{spec.sample}': format {spec.fmt} takes one file but {len(src)} were "
            f"downloaded ({spec.url}); list one .h5/.h5ad file or an archive holding it."
        )
    return unpack_matrix_file(src, out, sample=spec.sample, url=spec.url, member=spec.member)


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """``python -m mscflow.inputs.fetch hash URL``: download once and print the file's sha256."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m mscflow.inputs.fetch")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("hash", help="download URL to a temporary file, print sha256 and size"
                   ).add_argument("url")
    args = parser.parse_args(argv)
    check_url(args.url, "<command line>")
    with tempfile.TemporaryDirectory() as tmp:
        path = download(args.url, Path(tmp) / url_basename(args.url), sample="command line",
                        settings=FetchSettings.from_config({}))
        print(f"{sha256_file(path)}  {path.stat().st_size} bytes  {args.url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
