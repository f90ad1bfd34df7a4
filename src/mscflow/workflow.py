"""Glue used by the Snakemake rules and scripts: sample sheet, logging, config sections."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

REQUIRED_COLUMNS = ("sample", "tissue", "condition", "replicate", "species", "format")
SAMPLE_META_COLUMNS = ("sample", "tissue", "condition", "replicate", "species")


class SampleSheetError(ValueError):
    """The sample sheet is unusable; the message names the file, row and column."""


def read_sample_sheet(path: str | Path) -> pd.DataFrame:
    """Read the sample sheet (TSV) with all columns as text, indexed by sample id."""
    path = Path(path)
    if not path.is_file():
        raise SampleSheetError(
            f"sample sheet '{path}' not found. Create it (see config/README.md) or set "
            "`samples:` in config.yaml."
        )
    try:
        sheet = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False,
                            comment="#", skip_blank_lines=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise SampleSheetError(f"sample sheet '{path}' is not a readable TSV: {err}") from err
    sheet.columns = [str(c).strip() for c in sheet.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in sheet.columns]
    if missing:
        raise SampleSheetError(
            f"sample sheet '{path}' lacks column(s) {missing}; it has {list(sheet.columns)}. "
            f"Required: {list(REQUIRED_COLUMNS)} and one of path/url."
        )
    if "path" not in sheet.columns and "url" not in sheet.columns:
        raise SampleSheetError(f"sample sheet '{path}' needs a `path` or a `url` column.")
    for col in ("path", "url", "sha256", "layer"):
        if col not in sheet.columns:
            sheet[col] = ""
    sheet = sheet.apply(lambda s: s.str.strip())
    if sheet.empty:
        raise SampleSheetError(f"sample sheet '{path}' has no rows.")
    dups = sheet["sample"][sheet["sample"].duplicated()].unique().tolist()
    if dups:
        raise SampleSheetError(
            f"sample sheet '{path}': duplicate sample id(s) {dups}; every row needs a "
            "unique `sample`."
        )
    return sheet.set_index("sample", drop=False)


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
        if not in_demo and not os.path.exists(row["path"]):
            raise SampleSheetError(
                f"sample sheet '{sheet_path}', sample '{sample}': path '{row['path']}' does "
                "not exist. Fix the path (relative to the working directory) or use `url`."
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
    return logger
