"""The sample sheet: one reader for local (``path``) and remote (``url``) rows.

A sheet is a tab-separated UTF-8 file with one header line; lines that start with ``#`` are
comments, and a ``#`` inside a field is kept as data. Rows are checked against
``mscflow/schemas/samples.schema.yaml`` and by :func:`check_samples` (one species, paths
that exist and match their format). Every error is a :class:`SampleSheetError` naming the
file, the line, the sample and the column.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import pandas as pd

from mscflow.config import SAMPLES_SCHEMA, schema_errors
from mscflow.errors import SampleSheetError

__all__ = [
    "FILE_COLUMNS",
    "REQUIRED_COLUMNS",
    "SampleSheetError",
    "check_samples",
    "read_sample_sheet",
    "sample_id_problem",
    "sample_metadata",
]

REQUIRED_COLUMNS = ("sample", "tissue", "condition", "replicate", "species", "format")
# Columns that say where and how to read a sample; every other column is sample metadata.
FILE_COLUMNS = ("path", "format", "layer", "url", "sha256", "member")

# Sample ids become file names (results/qc/<sample>.h5ad): a strict, portable alphabet.
SAMPLE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SAMPLE_ID_MAX = 100
SHELL_METACHARACTERS = set("|&;<>()$`\\\"'*?[]#~=%!{},^")


def sample_id_problem(sample: str) -> str | None:
    """Why ``sample`` cannot be a sample id (it becomes a file name), or None if it can."""
    if not sample:
        return "it is empty"
    if len(sample) > SAMPLE_ID_MAX:
        return f"it is longer than {SAMPLE_ID_MAX} characters"
    if "/" in sample or "\\" in sample:
        return "it contains a slash, so it would name a file outside results/"
    if ".." in sample:
        return "it contains '..', which could name a file outside results/"
    if any(ch.isspace() for ch in sample):
        return "it contains white space"
    if sample.startswith("-"):
        return "it starts with '-', which commands would read as an option"
    bad = sorted({ch for ch in sample if ch in SHELL_METACHARACTERS})
    if bad:
        return f"it contains shell metacharacter(s) {' '.join(bad)}"
    if not SAMPLE_ID_RE.match(sample):
        return "it may hold only letters, digits, '_', '.' and '-' and start with a letter or digit"
    return None


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, fields) of the data rows; '#' lines and blank lines skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeError as err:
        raise SampleSheetError(
            f"sample sheet '{path}' is not a UTF-8 text file ({err}). Save it as UTF-8 TSV."
        ) from err
    numbered = [(n, line) for n, line in enumerate(text.splitlines(), start=1)
                if line.strip() and not line.lstrip().startswith("#")]
    if not numbered:
        raise SampleSheetError(f"sample sheet '{path}' is empty; write a header line and one "
                               "line per sample (tab-separated).")
    reader = csv.reader(io.StringIO("\n".join(line for _, line in numbered)), delimiter="\t",
                        quoting=csv.QUOTE_NONE)
    try:
        rows = list(reader)
    except csv.Error as err:
        raise SampleSheetError(
            f"sample sheet '{path}' is not a readable tab-separated file: {err}. Save it as "
            "TSV (tabs between columns, one header line)."
        ) from err
    if len(rows) != len(numbered):
        raise SampleSheetError(
            f"sample sheet '{path}' is not a readable tab-separated file (a line break "
            "inside a field?). Save it as TSV: one line per sample, tabs between columns."
        )
    header = [c.strip() for c in rows[0]]
    data = []
    for (line, _), fields in zip(numbered[1:], rows[1:], strict=True):
        if len(fields) > len(header):
            raise SampleSheetError(
                f"sample sheet '{path}', line {line}: {len(fields)} fields but the header has "
                f"{len(header)} columns ({header}). Separate columns by single tabs."
            )
        data.append((line, [f.strip() for f in fields] + [""] * (len(header) - len(fields))))
    return header, data


def read_sample_sheet(path: str | Path, *, validate: bool = True) -> pd.DataFrame:
    """Read the sample sheet (TSV) with every column as text, indexed by sample id.

    Missing optional file columns (``path``, ``url``, ``sha256``, ``layer``, ``member``)
    are added empty. ``sheet.attrs["lines"]`` maps each sample id to its line in the file.
    With ``validate`` every row is checked against the row schema. Raises
    :class:`SampleSheetError` naming the file, line and sample.
    """
    path = Path(path)
    if not path.is_file():
        raise SampleSheetError(
            f"sample sheet '{path}' not found. Create it (see config/README.md) or set "
            "`samples:` in config.yaml."
        )
    header, rows = _read_rows(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise SampleSheetError(
            f"sample sheet '{path}' lacks column(s) {missing}; it has {header}. "
            f"Required: {list(REQUIRED_COLUMNS)} and one of path/url (tab-separated header)."
        )
    if "path" not in header and "url" not in header:
        raise SampleSheetError(f"sample sheet '{path}' needs a `path` or a `url` column.")
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise SampleSheetError(
            f"sample sheet '{path}': column(s) {repeated} appear more than once in the "
            "header; keep one of each."
        )
    if not rows:
        raise SampleSheetError(f"sample sheet '{path}' has no rows; add one line per sample.")
    sheet = pd.DataFrame([fields for _, fields in rows], columns=header, dtype=str)
    for col in FILE_COLUMNS:
        if col not in sheet.columns:
            sheet[col] = ""
    lines = [line for line, _ in rows]
    first: dict[str, int] = {}
    for line, sample in zip(lines, sheet["sample"], strict=True):
        problem = sample_id_problem(sample)
        if problem:
            raise SampleSheetError(
                f"sample sheet '{path}', line {line}: sample id {sample!r} is not allowed: "
                f"{problem}. Sample ids become file names: use only letters, digits, '_', "
                "'.' and '-', starting with a letter or digit (e.g. lung_MSC_1)."
            )
        if sample in first:
            raise SampleSheetError(
                f"sample sheet '{path}', line {line}: duplicate sample id '{sample}' (first "
                f"on line {first[sample]}); every row needs a unique `sample`."
            )
        first[sample] = line
    sheet = sheet.set_index("sample", drop=False)
    sheet.attrs["lines"] = first
    sheet.attrs["path"] = str(path)
    if validate:
        _validate_rows(sheet, str(path))
    return sheet


def _validate_rows(samples: pd.DataFrame, sheet_path: str) -> None:
    """Check every row against the row schema, naming line and sample."""
    lines = samples.attrs.get("lines", {})
    for sample, row in samples.iterrows():
        values = {k: v for k, v in row.items() if not (v == "" and k not in REQUIRED_COLUMNS)}
        errors = schema_errors(values, SAMPLES_SCHEMA)
        if errors:
            raise SampleSheetError(
                f"sample sheet '{sheet_path}', line {lines.get(sample, '?')} (sample "
                f"'{sample}') is invalid: {'; '.join(errors)}. Columns and allowed values: "
                "README.md (sample sheet)."
            )


def _under(path: str, folder: str | None) -> bool:
    return bool(folder) and os.path.normpath(path).startswith(os.path.normpath(folder) + os.sep)


def check_samples(samples: pd.DataFrame, *, sheet_path: str, demo_dir: str | None = None) -> None:
    """Checks beyond the row schema: one species, a path or a url with its sha256, and
    paths that exist and match their format (paths under ``demo_dir`` are written by the
    demo rule, so they need not exist yet)."""
    species = samples["species"].unique().tolist()
    if len(species) > 1:
        raise SampleSheetError(
            f"sample sheet '{sheet_path}' mixes species {species}; run each species "
            "separately (gene sets are mapped to the data's species)."
        )
    lines = samples.attrs.get("lines", {})
    for sample, row in samples.iterrows():
        where = f"sample sheet '{sheet_path}', line {lines.get(sample, '?')}, sample '{sample}'"
        if row["url"]:
            if row["path"]:
                raise SampleSheetError(f"{where}: both `path` and `url` are set; keep one.")
            if not row["sha256"]:
                raise SampleSheetError(
                    f"{where}: `url` needs a `sha256` so the download can be verified."
                )
            continue
        if not row["path"]:
            raise SampleSheetError(f"{where}: give a `path` or a `url`.")
        if _under(row["path"], demo_dir):
            continue
        if not os.path.exists(row["path"]):
            raise SampleSheetError(
                f"{where}: path '{row['path']}' does not exist. Fix the path (relative to "
                "the working directory) or use `url`."
            )
        is_dir = os.path.isdir(row["path"])
        if (row["format"] == "10x_mtx") != is_dir:
            found = "a folder" if is_dir else "a file"
            raise SampleSheetError(
                f"{where}: format '{row['format']}' does not match path '{row['path']}', "
                f"which is {found}. Use format 10x_mtx for a Cell Ranger folder (matrix.mtx, "
                "barcodes, features), 10x_h5 for a .h5 file and h5ad for an .h5ad file."
            )


def sample_metadata(samples: pd.DataFrame, sample: str) -> dict[str, str]:
    """Metadata copied into every cell's obs: the sheet's columns minus the file columns."""
    row = samples.loc[sample]
    return {c: str(row[c]) for c in samples.columns if c not in FILE_COLUMNS}
