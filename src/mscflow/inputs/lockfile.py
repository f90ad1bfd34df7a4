"""Checksums pinned on first download: a preset's ``lock.tsv`` and the cache's stamps.

Public records (GEO, ArrayExpress, figshare, CELLxGENE) publish no checksum of their files,
so a preset cannot ship one it never saw. The first download of a file records its size and
sha256 in the preset's lock file; every later download (another machine, an emptied cache)
must give the same bytes, and a cached copy is checked against the pin before a run uses it.

``lock.tsv`` is tab-separated with a header: ``url``, ``file``, ``size``, ``sha256``,
``pinned`` (UTC date). It is rewritten through a temporary file and an atomic rename while
holding an ``flock`` on its folder, so parallel jobs pinning different files never lose a
row and a reader never sees half a file.

A verified cache file gets a stamp beside it (``.<name>.verified``: sha256, size, mtime in
ns) so the check of a later run costs one ``stat`` instead of re-reading gigabytes; a file
whose size or mtime changed since is hashed again.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import fcntl
import hashlib
import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mscflow.errors import MscflowError

LOG = logging.getLogger("mscflow.inputs.fetch")
HEADER = ("url", "file", "size", "sha256", "pinned")
CHUNK = 1 << 20


class LockFileError(MscflowError, ValueError):
    """The lock file is unreadable; the message names it and the fix."""


@dataclass(frozen=True)
class Pin:
    """Size and sha256 of a remote file as first downloaded."""

    url: str
    file: str
    size: int
    sha256: str
    pinned: str


def sha256_file(path: str | Path) -> str:
    """Return the hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def replace_text(path: str | Path, text: str) -> bool:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename.

    Returns False (and leaves the file untouched, mtime included) when it already holds
    ``text``. Light on purpose: used while Snakemake parses the workflow.
    """
    path = Path(path)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return True


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on a folder (no lock file is left behind)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class LockFile:
    """The pins of one preset (``lock.tsv``), keyed by URL."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:  # stable: Snakemake may record params holding a lock
        return f"LockFile({str(self.path)!r})"

    def read(self) -> dict[str, Pin]:
        """Every pin by URL (empty when the file does not exist yet)."""
        if not self.path.is_file():
            return {}
        rows = list(csv.reader(io.StringIO(self.path.read_text(encoding="utf-8")),
                               delimiter="\t"))
        rows = [r for r in rows if r and not r[0].startswith("#")]
        if not rows or tuple(rows[0]) != HEADER:
            raise LockFileError(
                f"lock file '{self.path}' does not start with the header "
                f"{'<TAB>'.join(HEADER)}; restore it from version control or delete it and "
                "rerun with --config fetch='{update_lock: true}' to pin the files anew."
            )
        pins: dict[str, Pin] = {}
        for n, row in enumerate(rows[1:], start=2):
            try:
                url, file, size, sha, pinned = row
                pins[url] = Pin(url, file, int(size), sha.lower(), pinned)
            except ValueError as err:
                raise LockFileError(
                    f"lock file '{self.path}', row {n}: {row} is not url, file, size, "
                    "sha256, pinned; fix or delete the row (it is pinned again on the next "
                    "download)."
                ) from err
        return pins

    def get(self, url: str) -> Pin | None:
        """The pin of ``url``, or None when it was never downloaded."""
        return self.read().get(url)

    def pin(self, url: str, file: str, size: int, sha256: str, *, replace: bool = False
            ) -> Pin:
        """Record ``url`` unless it is pinned already (or ``replace``); return the pin in
        force, so a caller whose bytes differ from a concurrent first pin can tell."""
        with folder_lock(self.path.parent):
            pins = self.read()
            if url in pins and not replace:
                return pins[url]
            today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
            pins[url] = Pin(url, file, int(size), sha256, today)
            lines = ["\t".join(HEADER)] + [
                "\t".join((p.url, p.file, str(p.size), p.sha256, p.pinned))
                for p in sorted(pins.values(), key=lambda p: (p.file, p.url))]
            replace_text(self.path, "\n".join(lines) + "\n")
            return pins[url]


# ------------------------------------------------------------------------ cache stamps


def stamp_path(path: str | Path) -> Path:
    """Where the verification stamp of a cached file lives."""
    path = Path(path)
    return path.with_name(f".{path.name}.verified")


def write_stamp(path: str | Path, sha256: str, stamp_for: str | Path | None = None) -> None:
    """Record that ``path`` (stat now) has ``sha256``; the stamp is named after
    ``stamp_for`` (the final name of a file still under its temporary name)."""
    st = os.stat(path)
    replace_text(stamp_path(stamp_for or path), f"{sha256}\t{st.st_size}\t{st.st_mtime_ns}\n")


def stamped_sha256(path: str | Path) -> str | None:
    """The sha256 of the stamp when the file is unchanged since it was written, else None."""
    path, stamp = Path(path), stamp_path(path)
    try:
        sha, size, mtime = stamp.read_text().split()
        st = path.stat()
    except (OSError, ValueError):
        return None
    return sha if (int(size), int(mtime)) == (st.st_size, st.st_mtime_ns) else None


def cached_sha256(path: str | Path) -> str:
    """sha256 of a cached file: from its stamp when unchanged, else hashed (and stamped)."""
    sha = stamped_sha256(path)
    if sha is None:
        sha = sha256_file(path)
        write_stamp(path, sha)
    return sha


def remove_cached(path: str | Path) -> None:
    """Delete a cached file and its stamp."""
    Path(path).unlink(missing_ok=True)
    stamp_path(path).unlink(missing_ok=True)


def check_cached(path: str | Path, lock: LockFile, url: str) -> str:
    """Check a cached copy of ``url`` against the lock before a run uses it.

    Returns ``"verified"`` (matches its pin), ``"pinned"`` (no pin yet: the cached bytes
    are pinned now), ``"removed"`` (does not match its pin: deleted so the run downloads it
    again and checks that download) or ``"missing"``.
    """
    path = Path(path)
    if not path.is_file():
        return "missing"
    sha = cached_sha256(path)
    pin = lock.get(url)
    if pin is None:
        lock.pin(url, path.name, path.stat().st_size, sha)
        return "pinned"
    if sha == pin.sha256:
        return "verified"
    LOG.warning("cached %s has sha256 %s but %s pins %s; removed, it is downloaded again",
                path, sha, lock.path, pin.sha256)
    remove_cached(path)
    return "removed"
