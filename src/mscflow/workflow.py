"""Glue used by the Snakemake rules and scripts: sample sheet, logging, config sections."""

from __future__ import annotations

import csv
import logging
import os
import re
import signal
import sys
import threading
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import yaml

REQUIRED_COLUMNS = ("sample", "tissue", "condition", "replicate", "species", "format")
SAMPLE_META_COLUMNS = ("sample", "tissue", "condition", "replicate", "species")


# Sample ids become file names (results/qc/<sample>.h5ad): a strict, portable alphabet.
SAMPLE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SAMPLE_ID_MAX = 100
SHELL_METACHARACTERS = set("|&;<>()$`\\\"'*?[]#~=%!{},^")


class SampleSheetError(ValueError):
    """The sample sheet is unusable; the message names the file, row and column."""


class ConfigError(ValueError):
    """The configuration is unusable; the message names the key and the fix."""


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


def _data_line_numbers(text: str) -> list[int]:
    """File line numbers of the header and data rows (blank and '#' lines are skipped)."""
    return [n for n, line in enumerate(text.splitlines(), start=1)
            if line.strip() and not line.startswith("#")]


def read_sample_sheet(path: str | Path) -> pd.DataFrame:
    """Read the sample sheet (TSV) with all columns as text, indexed by sample id.

    Raises SampleSheetError naming the file, line and sample for unreadable files, missing
    columns, unsafe or duplicate sample ids. ``sheet.attrs["lines"]`` maps each sample id to
    its line in the file.
    """
    path = Path(path)
    if not path.is_file():
        raise SampleSheetError(
            f"sample sheet '{path}' not found. Create it (see config/README.md) or set "
            "`samples:` in config.yaml."
        )
    try:
        text = path.read_text(encoding="utf-8")
        sheet = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_filter=False,
                            comment="#", skip_blank_lines=True, quoting=csv.QUOTE_NONE,
                            encoding="utf-8")
    except (pd.errors.ParserError, UnicodeError, pd.errors.EmptyDataError, csv.Error,
            ValueError) as err:
        raise SampleSheetError(
            f"sample sheet '{path}' is not a readable tab-separated UTF-8 file: {err}. "
            "Save it as TSV (tabs between columns, one header line)."
        ) from err
    sheet.columns = [str(c).strip() for c in sheet.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in sheet.columns]
    if missing:
        raise SampleSheetError(
            f"sample sheet '{path}' lacks column(s) {missing}; it has {list(sheet.columns)}. "
            f"Required: {list(REQUIRED_COLUMNS)} and one of path/url (tab-separated header)."
        )
    if "path" not in sheet.columns and "url" not in sheet.columns:
        raise SampleSheetError(f"sample sheet '{path}' needs a `path` or a `url` column.")
    repeated = sorted({c for c in sheet.columns if list(sheet.columns).count(c) > 1})
    if repeated:
        raise SampleSheetError(
            f"sample sheet '{path}': column(s) {repeated} appear more than once in the "
            "header; keep one of each."
        )
    for col in ("path", "url", "sha256", "layer"):
        if col not in sheet.columns:
            sheet[col] = ""
    sheet = sheet.fillna("").astype(str).apply(lambda s: s.str.strip())
    if sheet.empty:
        raise SampleSheetError(f"sample sheet '{path}' has no rows; add one line per sample.")
    lines = _data_line_numbers(text)[1:]
    if len(lines) != len(sheet):  # e.g. '#' inside a field: fall back to row numbers
        lines = list(range(2, len(sheet) + 2))
    for line, sample in zip(lines, sheet["sample"], strict=True):
        problem = sample_id_problem(sample)
        if problem:
            raise SampleSheetError(
                f"sample sheet '{path}', line {line}: sample id {sample!r} is not allowed: "
                f"{problem}. Sample ids become file names: use only letters, digits, '_', "
                "'.' and '-', starting with a letter or digit (e.g. lung_MSC_1)."
            )
    first: dict[str, int] = {}
    for line, sample in zip(lines, sheet["sample"], strict=True):
        if sample in first:
            raise SampleSheetError(
                f"sample sheet '{path}', line {line}: duplicate sample id '{sample}' (first "
                f"on line {first[sample]}); every row needs a unique `sample`."
            )
        first[sample] = line
    sheet = sheet.set_index("sample", drop=False)
    sheet.attrs["lines"] = first
    return sheet


def _schema_error_text(err) -> str:  # noqa: ANN001 - jsonschema.ValidationError
    """One line per schema violation: the dotted key, what is wrong, what is allowed."""
    key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
    if err.validator == "additionalProperties" and isinstance(err.instance, Mapping):
        allowed = sorted(err.schema.get("properties", {}))
        unknown = sorted(k for k in err.instance if k not in allowed)
        where = "top level" if key == "(top level)" else f"'{key}'"
        return (f"unknown key(s) {unknown} in {where}; allowed keys: {allowed} "
                "(check the spelling)")
    if err.validator == "required":
        return f"{key}: {err.message}; add it"
    description = err.schema.get("description") if isinstance(err.schema, Mapping) else None
    bounds = {k: err.schema[k] for k in ("type", "enum", "minimum", "exclusiveMinimum",
                                         "maximum", "exclusiveMaximum", "pattern")
              if isinstance(err.schema, Mapping) and k in err.schema}
    text = f"{key}: {err.message}"
    if bounds:
        text += f" (allowed: {', '.join(f'{k} {v}' for k, v in bounds.items())})"
    if description:
        text += f" -- {description}"
    return text


def schema_errors(instance: object, schema_path: str | Path) -> list[str]:
    """Every violation of the JSON schema at ``schema_path`` by ``instance``, as text."""
    import jsonschema  # snakemake's dependency; imported here to keep the package light

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.path)))
    return [_schema_error_text(e) for e in errors]


def validate_config(config: Mapping, schema_path: str | Path, *, source: str) -> None:
    """Check the config against its schema; ConfigError lists every bad key and the fix."""
    errors = schema_errors(dict(config), schema_path)
    if errors:
        raise ConfigError(
            f"{source} is invalid:\n  - " + "\n  - ".join(errors)
            + "\nFix these keys in the config file (or --config); every key, its type and "
            "range are documented in config/README.md."
        )


def validate_sample_rows(samples: pd.DataFrame, schema_path: str | Path, *,
                         sheet_path: str) -> None:
    """Check every sample-sheet row against the row schema, naming line and sample."""
    lines = samples.attrs.get("lines", {})
    for sample, row in samples.iterrows():
        values = {k: v for k, v in row.items() if not (v == "" and k not in REQUIRED_COLUMNS)}
        errors = schema_errors(values, schema_path)
        if errors:
            raise SampleSheetError(
                f"sample sheet '{sheet_path}', line {lines.get(sample, '?')} (sample "
                f"'{sample}') is invalid: {'; '.join(errors)}. Columns and allowed values: "
                "config/README.md."
            )


def check_gene_set_files(config: Mapping, species: str) -> None:
    """Every gene-set, synonym and ortholog file the run reads must exist; the GMT files
    must parse (no empty sets, set names unique across the programme and extra files)."""
    gs = config["genesets"]
    files: list[tuple[str, str]] = []
    for kind in ("programmes", "markers"):
        if species not in gs[kind]:
            raise ConfigError(
                f"config key 'genesets.{kind}' has no entry for species '{species}' (the "
                f"sample sheet's species); add `{species}: <path of a GMT file>` under it."
            )
        files.append((f"genesets.{kind}.{species}", gs[kind][species]))
    files += [(f"genesets.extra[{i}].path", e["path"]) for i, e in enumerate(gs.get("extra", []))]
    files += [(f"genesets.{k}", gs[k]) for k in ("synonyms", "orthologs") if gs.get(k)]
    for key, file in files:
        if not Path(file).is_file():
            raise ConfigError(
                f"config key '{key}': gene-set file '{file}' does not exist (paths are "
                "relative to the working directory). Fix the path in config.yaml or create "
                "the file (GMT format: name<TAB>description<TAB>gene1<TAB>gene2...)."
            )
    from mscflow.genesets import load_gene_sets  # light; parse the GMTs before any job runs

    gmts = [(files[0][0], [files[0][1]] + [e["path"] for e in gs.get("extra", [])]),
            (files[1][0], [files[1][1]])]
    for key, paths in gmts:
        try:
            load_gene_sets(paths)
        except ValueError as err:
            raise ConfigError(
                f"gene sets of config key '{key}'"
                + (" and genesets.extra" if len(paths) > 1 else "")
                + f" are unusable: {err}. Fix the GMT file (one set a line: "
                "name<TAB>description<TAB>gene1<TAB>gene2..., unique names, no empty sets)."
            ) from err


def check_contrasts(contrasts: Sequence[Mapping] | None, samples: pd.DataFrame) -> None:
    """Each contrast must name a tissue and two conditions that samples of the sheet have."""
    if not contrasts:
        return
    if not isinstance(contrasts, Sequence) or isinstance(contrasts, str):
        raise ConfigError("config key 'contrasts' must be a list of {name, tissue, condition, "
                          "reference, covariates} entries.")
    tissues = sorted(samples["tissue"].unique())
    for i, entry in enumerate(contrasts):
        where = f"config key 'contrasts[{i}]'"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where} must be a mapping with keys name, tissue, condition, "
                              f"reference (got {entry!r}).")
        missing = [k for k in ("name", "tissue", "condition", "reference") if k not in entry]
        if missing:
            raise ConfigError(f"{where} lacks key(s) {missing}; each contrast needs name, "
                              "tissue, condition and reference.")
        name, tissue = str(entry["name"]), str(entry["tissue"])
        where = f"config key 'contrasts[{i}]' (contrast '{name}')"
        if tissue not in tissues:
            raise ConfigError(
                f"{where}: tissue '{tissue}' has no samples in the sample sheet (tissues: "
                f"{tissues}). Fix `tissue` of the contrast or add samples of that tissue."
            )
        conditions = sorted(samples.loc[samples["tissue"] == tissue, "condition"].unique())
        for key in ("condition", "reference"):
            value = str(entry[key])
            if value not in conditions:
                raise ConfigError(
                    f"{where}: {key} '{value}' has no samples of tissue '{tissue}' in the "
                    f"sample sheet (conditions there: {conditions}). Fix `{key}` of the "
                    "contrast or add those samples."
                )
        covariates = entry.get("covariates") or []
        if isinstance(covariates, str):
            covariates = [covariates]
        absent = [c for c in covariates if str(c) not in samples.columns]
        if absent:
            raise ConfigError(
                f"{where}: covariate(s) {absent} are not sample-sheet columns (columns: "
                f"{list(samples.columns)}). Add the column to the sheet or drop the covariate."
            )


def check_samples(samples: pd.DataFrame, config: Mapping, *, sheet_path: str) -> None:
    """Checks beyond the JSON schema: one species, existing paths, url with sha256."""
    species = samples["species"].unique().tolist()
    if len(species) > 1:
        raise SampleSheetError(
            f"sample sheet '{sheet_path}' mixes species {species}; run each species "
            "separately (gene sets are mapped to the data's species)."
        )
    demo_dir = os.path.normpath(config.get("demo", {}).get("outdir", "")) if config.get(
        "demo") else None
    lines = samples.attrs.get("lines", {})
    for sample, row in samples.iterrows():
        if row["url"]:
            if not row["sha256"]:
                raise SampleSheetError(
                    f"sample sheet '{sheet_path}', sample '{sample}': `url` needs a "
                    "`sha256` so the download can be verified."
                )
            continue
        if not row["path"]:
            raise SampleSheetError(
                f"sample sheet '{sheet_path}', sample '{sample}': give a `path` or a `url`."
            )
        in_demo = demo_dir and os.path.normpath(row["path"]).startswith(demo_dir + os.sep)
        if in_demo:
            continue
        where = f"sample sheet '{sheet_path}', line {lines.get(sample, '?')}, sample '{sample}'"
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
    """Metadata columns copied into every cell's obs (sheet columns minus file columns)."""
    row = samples.loc[sample]
    skip = {"path", "format", "layer", "url", "sha256"}
    return {c: str(row[c]) for c in samples.columns if c not in skip}


def setup_logging(log_path: str | os.PathLike) -> logging.Logger:
    """Send logging, warnings and uncaught exceptions of a rule's script to its log file."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler, logging.StreamHandler(sys.stderr)]
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    logger = logging.getLogger("mscflow")

    def _excepthook(exc_type, exc, tb):  # noqa: ANN001
        logger.error("%s: %s", exc_type.__name__, exc, exc_info=(exc_type, exc, tb))

    sys.excepthook = _excepthook
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    return logger


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """On SIGTERM (Ctrl-C of Snakemake, a scheduler's kill): remove the temporary files of
    unfinished atomic writes and end the process at once. ``os._exit`` because an exception
    raised here can be swallowed by native callbacks (numba, h5py) and the job would go on."""
    io = sys.modules.get("mscflow.io")
    if io is not None:
        io.remove_pending_files()
    logging.getLogger("mscflow").error("terminated by signal %d; outputs not written", signum)
    logging.shutdown()
    os._exit(128 + signum)
