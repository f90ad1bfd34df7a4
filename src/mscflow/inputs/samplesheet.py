"""The sample sheet: one reader for local (``path``) and remote (``url``) rows.

A sheet is a tab-separated UTF-8 file with one header line; lines that start with ``#`` are
comments, and a ``#`` inside a field is kept as data. Rows are checked against
``mscflow/schemas/samples.schema.yaml`` and by :func:`check_samples` (one species, paths
that exist and match their format). :func:`check_sample_files` opens the h5ad and loom files
the rows name (their columns, not their matrices) to check ``obs_filter``, ``layer``,
``var_symbols``, ``keep_obs`` and the species before any job runs, and that no cell falls in
two samples. Every error is a :class:`SampleSheetError` naming the file, the line, the sample
and the column.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import pandas as pd

from mscflow.config import SAMPLES_SCHEMA, schema_errors
from mscflow.errors import InputDataError, SampleSheetError

__all__ = [
    "FILE_COLUMNS",
    "REQUIRED_COLUMNS",
    "SampleSheetError",
    "check_sample_files",
    "check_samples",
    "read_sample_sheet",
    "reading_options",
    "sample_id_problem",
    "sample_metadata",
]

REQUIRED_COLUMNS = ("sample", "tissue", "condition", "replicate", "species", "format")
# Columns that say where and how to read a sample; every other column is sample metadata.
FILE_COLUMNS = ("path", "format", "layer", "url", "sha256", "member", "obs_filter",
                "var_symbols", "keep_obs")
# The file columns that tell the reader what to take from an h5ad or loom file.
READING_COLUMNS = ("layer", "obs_filter", "var_symbols", "keep_obs")
# Formats whose files hold per-cell and per-gene columns (mscflow.inputs.readers.ANNOTATED_FORMATS).
ANNOTATED_FORMATS = ("h5ad", "loom")

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


def _unquote(field: str) -> str:
    """A field as spreadsheets write it: ``"a ""b"" c"`` -> ``a "b" c``; others unchanged.

    Quoting is per field only (a sheet row is one line), so a field with a tab or a line
    break inside quotes is still not allowed.
    """
    if len(field) >= 2 and field[0] == field[-1] == '"':
        return field[1:-1].replace('""', '"')
    return field


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
    header = [_unquote(c.strip()) for c in rows[0]]
    data = []
    for (line, _), fields in zip(numbered[1:], rows[1:], strict=True):
        if len(fields) > len(header):
            raise SampleSheetError(
                f"sample sheet '{path}', line {line}: {len(fields)} fields but the header has "
                f"{len(header)} columns ({header}). Separate columns by single tabs."
            )
        data.append((line, [_unquote(f.strip()) for f in fields]
                     + [""] * (len(header) - len(fields))))
    return header, data


def read_sample_sheet(path: str | Path, *, validate: bool = True) -> pd.DataFrame:
    """Read the sample sheet (TSV) with every column as text, indexed by sample id.

    Missing optional file columns (``path``, ``url``, ``sha256``, ``layer``, ``member``,
    ``obs_filter``, ``var_symbols``, ``keep_obs``) are added empty. ``sheet.attrs["lines"]``
    maps each sample id to its line in the file. With ``validate`` every row is checked
    against the row schema. Raises
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
    for sample, row in samples.iterrows():
        where = _where(samples, sheet_path, sample)
        used = [c for c in READING_COLUMNS if row[c]]
        if used and row["format"] not in ANNOTATED_FORMATS:
            raise SampleSheetError(
                f"{where}: column(s) {used} apply to h5ad and loom files only, but its format "
                f"is {row['format']}. Empty them for this row, or fix `format`."
            )
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
                "barcodes, features), 10x_h5 for a .h5 file, h5ad for an .h5ad file and "
                "loom for a .loom file."
            )
    _check_shared_paths(samples, sheet_path)


def _where(samples: pd.DataFrame, sheet_path: str, sample: str) -> str:
    line = samples.attrs.get("lines", {}).get(sample, "?")
    return f"sample sheet '{sheet_path}', line {line}, sample '{sample}'"


def _check_shared_paths(samples: pd.DataFrame, sheet_path: str) -> None:
    """Rows may share a path only when each takes its own cells with ``obs_filter``."""
    rows = samples[samples["path"] != ""]
    for path, group in rows.groupby("path", sort=False):
        unfiltered = group.index[group["obs_filter"] == ""].tolist()
        if len(group) > 1 and unfiltered:
            others = [s for s in group.index if s != unfiltered[0]]
            raise SampleSheetError(
                f"{_where(samples, sheet_path, unfiltered[0])} reads every cell of "
                f"'{path}', which sample(s) {others} read too, so those cells would be in "
                "two samples. Give each row sharing a path an `obs_filter` "
                "(column=value) that selects its own cells, or remove the repeated row."
            )


def check_sample_files(samples: pd.DataFrame, *, sheet_path: str,
                       demo_dir: str | None = None) -> None:
    """Open the h5ad and loom files of the sheet's path rows (columns only, never the
    matrices) and check, before any job: the ``obs_filter``, ``keep_obs`` and
    ``var_symbols`` columns and the ``layer`` exist; the genes are named by symbols of the
    sheet's species; every ``obs_filter`` selects cells and no cell is selected by two rows
    sharing a file. Raises :class:`SampleSheetError` naming the sheet line, the sample, the
    file and the fix. (Rows with a ``url`` are checked by their QC job, once downloaded.)"""
    rows = samples[samples["format"].isin(ANNOTATED_FORMATS) & (samples["url"] == "")
                   & ~samples["path"].map(lambda p: _under(p, demo_dir))]
    if rows.empty:
        return
    # the parse-time check imports this module: anndata and h5py only when a file is opened
    from mscflow.inputs.matrixfiles import open_matrix_file
    from mscflow.inputs.readers import check_source

    for (path, fmt), group in rows.groupby(["path", "format"], sort=False):
        masks: dict[str, object] = {}
        first = _where(samples, sheet_path, group.index[0])
        try:
            with open_matrix_file(path, fmt) as source:
                for sample, row in group.iterrows():
                    try:
                        masks[sample] = check_source(
                            source, sample=sample, species=row["species"], layer=row["layer"],
                            obs_filter=row["obs_filter"], var_symbols=row["var_symbols"],
                            keep_obs=row["keep_obs"])
                    except InputDataError as err:
                        reason = str(err).removeprefix(f"sample '{sample}': ")
                        raise SampleSheetError(f"{_where(samples, sheet_path, sample)}: "
                                               f"{reason}") from err
                cell_names = source.obs_names if len(group) > 1 else None
                _check_disjoint(samples, sheet_path, path, masks, cell_names)
        except (SampleSheetError, InputDataError):
            raise
        except Exception as err:  # noqa: BLE001 - an unreadable file, named with its row
            raise SampleSheetError(
                f"{first}: could not read '{path}' as {fmt} ({type(err).__name__}: {err}). "
                "The file may be truncated or corrupt, or not of this format: re-download "
                "it or fix `format`."
            ) from err


def _check_disjoint(samples: pd.DataFrame, sheet_path: str, path: str,
                    masks: dict[str, object], cell_names: object) -> None:
    """No cell of ``path`` may be selected by two rows."""
    import numpy as np

    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = np.flatnonzero(np.asarray(masks[a]) & np.asarray(masks[b]))
            if len(both):
                example = cell_names()[both[0]] if cell_names else both[0]
                raise SampleSheetError(
                    f"{_where(samples, sheet_path, b)}: its obs_filter "
                    f"'{samples.loc[b, 'obs_filter']}' and that of sample '{a}' "
                    f"('{samples.loc[a, 'obs_filter']}') both select {len(both)} cell(s) of "
                    f"'{path}' (e.g. '{example}'), so they would be in two samples. Make the "
                    "filters disjoint, e.g. add a term (column=value;column=value) that "
                    "tells the samples apart."
                )


def reading_options(samples: pd.DataFrame, sample: str) -> dict[str, str]:
    """What the QC job takes from the sample's file: ``layer``, ``obs_filter``,
    ``var_symbols``, ``keep_obs`` (keywords of :func:`mscflow.inputs.readers.read_sample`), and
    ``run_keep_obs``, every row's ``keep_obs`` (keywords of :func:`mscflow.qc.core.qc_sample`)."""
    row = samples.loc[sample]
    options = {column: str(row[column]) for column in READING_COLUMNS}
    options["run_keep_obs"] = ",".join(dict.fromkeys(
        c.strip() for text in samples["keep_obs"] for c in re.split(r"[,;]", text)
        if c.strip()))
    return options


def sample_metadata(samples: pd.DataFrame, sample: str) -> dict[str, str]:
    """Metadata copied into every cell's obs: the sheet's columns minus the file columns."""
    row = samples.loc[sample]
    return {c: str(row[c]) for c in samples.columns if c not in FILE_COLUMNS}
