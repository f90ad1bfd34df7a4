"""GEO series: samples from the series matrix, files from the supplementary listing.

GEO's public HTTPS layout (the same paths as its FTP site), with ``GSE136103`` as example:

- ``https://ftp.ncbi.nlm.nih.gov/geo/series/GSE136nnn/GSE136103/`` is the series folder
  (the accession with its last three digits replaced by ``nnn``; ``GSE1234 -> GSE1nnn``);
- ``matrix/`` lists one ``*_series_matrix.txt.gz`` per platform (``GSE136103-GPL20301_...``
  when the series has several), each holding tab-separated ``!Sample_...`` lines with one
  quoted value per sample: ``!Sample_title``, ``!Sample_geo_accession``,
  ``!Sample_organism_ch1``, repeated ``!Sample_characteristics_ch1`` (``"key: value"``)
  and ``!Sample_supplementary_file_N`` (``ftp://`` URLs of the sample's own files);
- ``suppl/`` lists the series' files; ``<GSE>_RAW.tar`` bundles every sample's files and
  ``suppl/filelist.txt`` lists its members (``#Archive/File  Name  Time  Size  Type``).

``take: sample`` uses each sample's own supplementary files (only the chosen samples are
downloaded); ``take: series_tar`` the members of ``_RAW.tar`` whose names start with the
sample's GSM accession (one download shared by all samples).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from mscflow.inputs.resolve.base import (
    PresetError,
    RecordCache,
    RecordFile,
    RecordSample,
    listing_links,
    normalise_field,
)

GEO_ROOT = "https://ftp.ncbi.nlm.nih.gov/geo"
MATRIX_SUFFIX = "_series_matrix.txt.gz"
FILELIST_HEADER = ["#Archive/File", "Name", "Time", "Size", "Type"]
# !Sample_<key> lines kept as fields (characteristics and files are parsed separately)
CORE_FIELDS = {"title": "title", "geo_accession": "gsm", "source_name_ch1": "source_name",
               "organism_ch1": "organism", "description": "description",
               "platform_id": "platform", "molecule_ch1": "molecule"}


def series_url(accession: str) -> str:
    """The series folder, e.g. ``.../geo/series/GSE136nnn/GSE136103``."""
    stub = re.sub(r"\d{1,3}$", "nnn", accession)
    return f"{GEO_ROOT}/series/{stub}/{accession}"


def https_url(url: str) -> str:
    """A GEO ``ftp://`` URL as HTTPS, its path percent-encoded (``+`` -> ``%2B``)."""
    parts = urlsplit(url)
    return f"https://{parts.netloc}{quote(parts.path, safe='/')}"


def _values(line: str) -> tuple[str, list[str]]:
    key, *cells = next(csv.reader([line], delimiter="\t"))
    return key, [c.strip() for c in cells]


def parse_series_matrix(text: str, source: str = "series matrix") -> list[RecordSample]:
    """The samples of one series matrix with their fields and supplementary files."""
    columns: dict[str, list[str]] = {}
    characteristics: list[list[str]] = []
    files: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("!series_matrix_table_begin"):
            break
        if not line.startswith("!Sample_"):
            continue
        key, cells = _values(line)
        key = key.removeprefix("!Sample_")
        if key.startswith("characteristics_ch1"):
            characteristics.append(cells)
        elif key.startswith("supplementary_file"):
            files.append(cells)
        elif key in CORE_FIELDS and key not in columns:
            columns[key] = cells
    gsms = columns.get("geo_accession")
    if not gsms:
        raise PresetError(f"{source} has no !Sample_geo_accession line; it is not a GEO "
                          "series matrix (check the accession).")
    samples = []
    for i, gsm in enumerate(gsms):
        fields = {name: columns[key][i] for key, name in CORE_FIELDS.items()
                  if key in columns and i < len(columns[key])}
        for row in characteristics:
            if i < len(row) and ":" in row[i]:
                key, value = row[i].split(":", 1)
                fields.setdefault(normalise_field(key), value.strip())
        urls = [https_url(row[i]) for row in files
                if i < len(row) and row[i] and row[i].upper() != "NONE"]
        samples.append(RecordSample(gsm, fields, [
            RecordFile(name=urlsplit(u).path.rsplit("/", 1)[-1], url=u) for u in urls]))
    return samples


def parse_filelist(text: str, source: str = "filelist.txt") -> tuple[str, list[RecordFile]]:
    """(archive name, members with sizes) from GEO's ``filelist.txt``."""
    rows = [r for r in csv.reader(io.StringIO(text), delimiter="\t") if r]
    if not rows or [c.strip() for c in rows[0][:5]] != FILELIST_HEADER:
        raise PresetError(f"{source} does not start with the header "
                          f"{' '.join(FILELIST_HEADER)}; it is not a GEO filelist.txt.")
    archive, members = "", []
    for row in rows[1:]:
        kind, name, _time, size = (row + ["", "", "", ""])[:4]
        if kind == "Archive" and not archive:
            archive = name
        elif kind == "File":
            members.append(RecordFile(name=name, url="", member=name,
                                      size=int(size) if size.isdigit() else None))
    return archive, members


def geo_records(source: Mapping[str, Any], cache: RecordCache) -> list[RecordSample]:
    """Samples of a GEO series with the files ``source["take"]`` selects."""
    accession = source["accession"]
    base = series_url(accession)
    matrix_names = [n for n in listing_links(cache.text(f"{base}/matrix/", "matrix.html"))
                    if n.endswith(MATRIX_SUFFIX)]
    if not matrix_names:
        raise PresetError(f"{cache.label}: {base}/matrix/ lists no *{MATRIX_SUFFIX}; check "
                          "that the accession is a public GEO series.")
    samples: list[RecordSample] = []
    for name in sorted(matrix_names):
        samples += parse_series_matrix(cache.text(f"{base}/matrix/{name}", name),
                                       f"{cache.label}: {name}")
    samples.sort(key=lambda s: int(re.sub(r"\D", "", s.accession) or 0))  # GSM order
    if source.get("take", "sample") == "series_tar":
        _attach_tar_members(samples, base, accession, cache)
    return samples


def _attach_tar_members(samples: list[RecordSample], base: str, accession: str,
                        cache: RecordCache) -> None:
    """Replace each sample's files by its members of ``<GSE>_RAW.tar``."""
    listed = listing_links(cache.text(f"{base}/suppl/", "suppl.html"))
    if "filelist.txt" not in listed:
        raise PresetError(
            f"{cache.label}: {base}/suppl/ has no filelist.txt (it lists {listed or 'nothing'}), "
            "so the series has no _RAW.tar of sample files; use `take: sample`."
        )
    archive, members = parse_filelist(cache.text(f"{base}/suppl/filelist.txt", "filelist.txt"),
                                      f"{cache.label}: filelist.txt")
    archive = archive or f"{accession}_RAW.tar"
    if archive not in listed:
        raise PresetError(f"{cache.label}: filelist.txt describes {archive} but {base}/suppl/ "
                          f"does not list it ({listed}).")
    tar_url = f"{base}/suppl/{quote(archive)}"
    for sample in samples:
        prefix = f"{sample.accession}_"
        sample.files = [RecordFile(m.name, tar_url, m.member, m.size) for m in members
                        if m.name.startswith(prefix)]
