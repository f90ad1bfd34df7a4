"""ArrayExpress studies (BioStudies): samples and files from the study's SDRF table.

Layout (BioStudies API, as used by public loaders; no study of a shipped preset uses it
yet): ``https://www.ebi.ac.uk/biostudies/api/v1/studies/<acc>/info`` gives ``httpLink``,
the study's file folder; ``<httpLink>/Files/<acc>.sdrf.txt`` is the sample table, one row
per assay with ``Source Name``, ``Characteristics[...]``, ``Factor Value[...]`` and the
processed files in ``Derived Array Data File`` (or ``... Matrix File``) columns, which
are downloaded from ``<httpLink>/Files/<name>``. Rows are grouped by ``Source Name``.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from mscflow.inputs.resolve.base import (
    PresetError,
    RecordCache,
    RecordFile,
    RecordSample,
    normalise_field,
)

BIOSTUDIES_API = "https://www.ebi.ac.uk/biostudies/api/v1/studies"
FILE_COLUMN_RE = re.compile(r"^(derived array data (matrix )?file|processed data file)$",
                            re.IGNORECASE)
FIELD_COLUMN_RE = re.compile(r"^(characteristics|factor value|comment)\s*\[(.+)\]$",
                             re.IGNORECASE)


def parse_sdrf(text: str, files_url: str, source: str = "SDRF") -> list[RecordSample]:
    """Samples of an SDRF table (grouped by Source Name) with their processed files."""
    rows = [r for r in csv.reader(io.StringIO(text), delimiter="\t") if any(r)]
    if not rows or "Source Name" not in rows[0]:
        raise PresetError(f"{source} has no 'Source Name' column; it is not an SDRF table.")
    header = rows[0]
    samples: dict[str, RecordSample] = {}
    for row in rows[1:]:
        cells = dict(zip(header, row, strict=False))
        name = cells["Source Name"].strip()
        sample = samples.setdefault(name, RecordSample(name, {"source_name": name}))
        for column, value in zip(header, row, strict=False):
            match = FIELD_COLUMN_RE.match(column.strip())
            if match and value.strip():
                sample.fields.setdefault(normalise_field(match.group(2)), value.strip())
            if FILE_COLUMN_RE.match(column.strip()) and value.strip():
                file = value.strip()
                if all(f.name != file for f in sample.files):
                    sample.files.append(RecordFile(file, f"{files_url}/{quote(file)}"))
    return list(samples.values())


def arrayexpress_records(source: Mapping[str, Any], cache: RecordCache) -> list[RecordSample]:
    """Samples of an ArrayExpress/BioStudies study."""
    accession = source["accession"]
    info_url = f"{BIOSTUDIES_API}/{accession}/info"
    try:
        info = json.loads(cache.text(info_url, "info.json"))
        files_url = info["httpLink"].rstrip("/") + "/Files"
    except (ValueError, KeyError, AttributeError) as err:
        raise PresetError(f"{cache.label}: {info_url} is not the study's info JSON with an "
                          f"httpLink ({err}); check the accession.") from err
    sdrf = f"{accession}.sdrf.txt"
    return parse_sdrf(cache.text(f"{files_url}/{sdrf}", sdrf), files_url,
                      f"{cache.label}: {sdrf}")
