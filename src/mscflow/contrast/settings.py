"""What to compare and how: the ``contrasts`` config list and the ``contrast_settings``
section.

Every default lives in ``mscflow/schemas/config.schema.yaml``; the dataclasses here have
none. :func:`parse_contrasts` is the one validator of the contrasts (config keys, names,
covariates, and the sample sheet's tissues, conditions and columns); ``common.smk`` calls
it through :func:`mscflow.config.prepare_run` before any job runs and every contrast job
calls it again on the same config.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mscflow.config import (
    Settings,
    fill_defaults,
    schema_errors,
    section_schema,
    settings_section,
)
from mscflow.errors import ConfigError

__all__ = [
    "COMPOSITION_TESTS",
    "SCORE_TESTS",
    "Contrast",
    "ContrastSettings",
    "GseaSettings",
    "PseudobulkSettings",
    "parse_contrasts",
]

_SECTION = section_schema("contrast_settings")["properties"]
SCORE_TESTS: tuple[str, ...] = tuple(_SECTION["score_test"]["enum"])
COMPOSITION_TESTS: tuple[str, ...] = tuple(_SECTION["composition_test"]["enum"])

_REQUIRED = ("name", "tissue", "condition", "reference")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
# Columns every contrast uses already (or that identify cells), never covariates.
_RESERVED_COLUMNS = {"sample", "tissue", "condition", "replicate", "species", "cell_type"}


@dataclass(frozen=True)
class Contrast:
    """One condition contrast within a tissue: ``condition`` vs ``reference``, adjusted for
    the sample-sheet columns ``covariates``."""

    name: str
    tissue: str
    condition: str
    reference: str
    covariates: tuple[str, ...]


@settings_section("contrast_settings.pseudobulk")
class PseudobulkSettings(Settings):
    """``contrast_settings.pseudobulk``: gene filter of the pseudobulk DE."""


@settings_section("contrast_settings.gsea")
class GseaSettings(Settings):
    """``contrast_settings.gsea``: gseapy prerank and the enrichment plots."""

    def __post_init__(self) -> None:
        if self.max_size < self.min_size:
            raise ConfigError(
                f"contrast_settings.gsea: need 1 <= min_size <= max_size, got "
                f"min_size={self.min_size}, max_size={self.max_size}; fix one of them"
            )


@settings_section("contrast_settings", pseudobulk=PseudobulkSettings, gsea=GseaSettings)
class ContrastSettings(Settings):
    """``contrast_settings``: thresholds and test choices shared by all contrasts (keys,
    types and defaults in the schema; config/README.md and README say what they mean)."""


def parse_contrasts(entries: Sequence[Mapping] | str | None,
                    samples: pd.DataFrame) -> list[Contrast]:
    """Validate the ``contrasts`` config list (or its JSON text, how rules hand it over)
    against its schema and the sample sheet.

    Each entry needs ``name`` (unique, file-name safe), ``tissue``, ``condition`` and
    ``reference`` (both with samples of that tissue) and optional ``covariates``
    (sample-sheet columns without missing values in the tissue). Raises
    :class:`~mscflow.errors.ConfigError` naming ``contrasts[i]`` and the contrast.
    """
    if isinstance(entries, str):  # a rule's params as JSON (mscflow.report.markup)
        entries = json.loads(entries)
    if not entries:
        return []
    if not isinstance(entries, Sequence):
        raise ConfigError("config key 'contrasts' must be a list of {name, tissue, condition, "
                          "reference, covariates} entries.")
    item_schema = section_schema("contrasts")["items"]
    out: list[Contrast] = []
    first: dict[str, int] = {}
    for i, entry in enumerate(entries):
        contrast, where = _parse_entry(i, entry, item_schema)
        if contrast.name in first:
            raise ConfigError(
                f"{where} is listed twice in config 'contrasts' (first as "
                f"contrasts[{first[contrast.name]}]); give every contrast a unique name."
            )
        first[contrast.name] = i
        _check_against_sheet(contrast, where, samples)
        out.append(contrast)
    return out


def _parse_entry(i: int, entry: Any, item_schema: Mapping) -> tuple[Contrast, str]:
    """One contrast entry checked on its own (keys, name, covariate names)."""
    where = f"config key 'contrasts[{i}]'"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be a mapping with keys name, tissue, condition, "
                          f"reference (got {entry!r}).")
    missing = [k for k in _REQUIRED if k not in entry]
    if missing:
        raise ConfigError(f"{where} lacks key(s) {missing}; each contrast needs name, "
                          "tissue, condition and reference.")
    name = str(entry["name"])
    where = f"{where} (contrast '{name}')"
    if not _NAME_RE.match(name):
        raise ConfigError(f"{where}: the name may only contain letters, digits, '_', '.', '-' "
                          "(it becomes part of file names); rename the contrast.")
    errors = schema_errors(dict(entry), item_schema, prefix=f"contrasts[{i}]")
    if errors:
        raise ConfigError(f"{where} is invalid:\n  - " + "\n  - ".join(errors)
                          + "\nEvery key of a contrast is documented in config/README.md.")
    entry = fill_defaults(dict(entry), item_schema)
    contrast = Contrast(name=name, tissue=str(entry["tissue"]),
                        condition=str(entry["condition"]), reference=str(entry["reference"]),
                        covariates=tuple(str(c) for c in entry["covariates"]))
    if contrast.condition == contrast.reference:
        raise ConfigError(f"{where}: condition and reference are both "
                          f"'{contrast.condition}'; a contrast compares two conditions.")
    for cov in contrast.covariates:
        if cov in _RESERVED_COLUMNS:
            raise ConfigError(
                f"{where}: covariate '{cov}' must be a sample-sheet column name that is not "
                f"one of {sorted(_RESERVED_COLUMNS)} (those define the contrast itself)."
            )
    return contrast, where


def _check_against_sheet(c: Contrast, where: str, samples: pd.DataFrame) -> None:
    """The contrast's tissue, conditions and covariates must exist in the sample sheet."""
    tissue = samples["tissue"].astype(str)
    tissues = sorted(tissue.unique())
    if c.tissue not in tissues:
        raise ConfigError(
            f"{where}: tissue '{c.tissue}' has no samples in the sample sheet (tissues: "
            f"{tissues}). Fix `tissue` of the contrast or add samples of that tissue."
        )
    sub = samples[tissue == c.tissue]
    conditions = sorted(sub["condition"].astype(str).unique())
    for key, value in (("condition", c.condition), ("reference", c.reference)):
        if value not in conditions:
            raise ConfigError(
                f"{where}: {key} '{value}' has no samples of tissue '{c.tissue}' in the "
                f"sample sheet (conditions there: {conditions}). Fix `{key}` of the "
                "contrast or add those samples."
            )
    for cov in c.covariates:
        if cov not in samples.columns:
            raise ConfigError(
                f"{where}: covariate '{cov}' is not a sample-sheet column (columns: "
                f"{list(samples.columns)}). Add the column to the sheet or drop the covariate."
            )
        if sub[cov].isna().any():
            raise ConfigError(
                f"{where}: covariate '{cov}' has missing values in tissue '{c.tissue}'; "
                "fill them in the sample sheet."
            )
