"""What every record resolver shares: the record's samples and files, and a metadata cache.

A resolver turns a public record (a GEO series, an ArrayExpress study, a CELLxGENE
collection, or the explicit list of a ``files`` preset) into :class:`RecordSample` objects:
the record's own annotations (title, organism, characteristics, ...) under normalised field
names, and the files that belong to each sample. :mod:`mscflow.inputs.resolve.mapping` then maps
them to sample-sheet rows as the preset says.

Metadata (series matrices, listings, JSON) is downloaded through
:func:`mscflow.inputs.fetch.download` (retries, resume, atomic rename) into
``<fetch.cache_dir>/records/<accession>/`` and reused by every later parse, so resolving
again costs no request; ``fetch.update_lock`` reads the record again.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from mscflow.errors import ConfigError
from mscflow.inputs.fetch import download

RECORDS_DIR = "records"


class PresetError(ConfigError):
    """A preset cannot be resolved to a sample sheet; the message names the preset, the
    record and the fix."""


@dataclass(frozen=True)
class RecordFile:
    """A file of a record: its name, where to download it, and (for a member of an archive
    such as GEO's ``_RAW.tar``) the member's name inside the archive at ``url``."""

    name: str
    url: str
    member: str = ""
    size: int | None = None


@dataclass
class RecordSample:
    """One sample of a record: its accession (GSM, source name, dataset id), annotations
    under normalised names (:func:`normalise_field`), and its files."""

    accession: str
    fields: dict[str, str]
    files: list[RecordFile] = field(default_factory=list)
    explicit_member: str | None = None  # set by a `files` preset: the archive member to use


def normalise_field(name: str) -> str:
    """A record's annotation key as a template field: ``cause of liver disease`` ->
    ``cause_of_liver_disease``."""
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def listing_links(html: str) -> list[str]:
    """File and folder names linked from an HTTP directory index (Apache, nginx, GEO)."""
    names = []
    for href in re.findall(r"""href\s*=\s*["']([^"']+)["']""", html, flags=re.IGNORECASE):
        if href.startswith(("?", "/", "#", "../")) or "://" in href:
            continue
        names.append(unquote(href))
    return list(dict.fromkeys(names))


class RecordCache:
    """Metadata files of one record, downloaded once into the cache and read from there."""

    def __init__(self, folder: str | Path, settings: Any, label: str, *,
                 refresh: bool = False) -> None:
        self.folder = Path(folder)
        self.settings = settings
        self.label = label
        self.refresh = refresh
        self.requested: list[str] = []

    def path(self, url: str, name: str) -> Path:
        """Local copy of ``url`` (downloaded on first use, or again when refreshing)."""

        dest = self.folder / name
        refresh = self.refresh and url not in self.requested
        if refresh or not dest.is_file():
            self.requested.append(url)
            download(url, dest, sample=self.label, label=self.label,
                     settings=self.settings, refresh=refresh)
        return dest

    def text(self, url: str, name: str) -> str:
        """Text of ``url`` (gunzipped when ``name`` ends in .gz)."""
        path = self.path(url, name)
        data = path.read_bytes()
        if name.endswith(".gz"):
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError) as err:
                path.unlink(missing_ok=True)
                raise PresetError(
                    f"{self.label}: {url} is not a readable gzip file ({err}); the cached copy "
                    "was removed, rerun to download it again."
                ) from err
        return data.decode("utf-8", errors="replace")
