"""Presets: public data sets resolved to a sample sheet while the workflow is parsed.

A preset is a folder ``config/presets/NAME/`` (looked up in the working directory first,
then beside the Snakefile) holding:

- ``preset.yaml``: the record (GEO series, ArrayExpress study, CELLxGENE collection, or
  listed files) and the mapping of its sample annotations to sheet rows
  (``schemas/preset.schema.yaml``; :mod:`mscflow.inputs.resolve.mapping` explains the keys);
- ``config.yaml`` (optional): config keys the data set needs (QC bounds, contrasts); only
  valid config keys, applied as defaults < preset < command line;
- ``lock.tsv``: size and sha256 of every file, pinned on first download
  (:mod:`mscflow.inputs.lockfile`); written beside ``preset.yaml``, or under
  ``results/preset/NAME/`` when the folder is read-only (no write bit);
- ``README.md``: paper, accession, what the files are, which samples are which condition.

``snakemake --config preset=NAME`` reads the record (metadata cached under
``<fetch.cache_dir>/records/``), writes the sheet it will use to
``results/preset/NAME/samples.tsv`` and the files with their pins to ``files.tsv``, prints
both, checks cached downloads against the lock, and only then builds the jobs.
"""

from __future__ import annotations

import os
import re
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from mscflow.config import CONFIG_SCHEMA, SCHEMA_DIR, deep_update, schema_errors
from mscflow.errors import ConfigError, SampleSheetError
from mscflow.inputs.fetch import FetchSettings, url_basename, url_key, url_samples
from mscflow.inputs.lockfile import LockFile, check_cached, replace_text
from mscflow.inputs.resolve import RecordCache, describe, records, sheet_rows
from mscflow.inputs.resolve.base import RECORDS_DIR, PresetError

PRESET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
PRESET_SCHEMA = SCHEMA_DIR / "preset.schema.yaml"
RESULTS_DIR = Path("results") / "preset"
SHEET_COLUMNS = ("sample", "tissue", "condition", "replicate", "species", "format", "layer",
                 "url", "sha256", "member", "record")


def _dirs(presets_dir: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(presets_dir, (str, Path)):
        return [Path(presets_dir)]
    return [Path(d) for d in presets_dir]


def list_presets(presets_dir: str | Path | Sequence[str | Path]) -> list[str]:
    """Names of the preset folders (those holding a ``preset.yaml``)."""
    names = {p.name for d in _dirs(presets_dir) if d.is_dir() for p in d.iterdir()
             if (p / "preset.yaml").is_file()}
    return sorted(names)


@dataclass
class Preset:
    """A preset folder, its resolution spec and its config overrides (both validated)."""

    name: str
    folder: Path
    spec: dict[str, Any]
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def results(self) -> Path:
        """Where the resolved sheet, the file table and a run-local lock go."""
        return RESULTS_DIR / self.name

    @property
    def sheet_path(self) -> Path:
        """The sheet the run uses."""
        return self.results / "samples.tsv"


def _load_yaml(path: Path, what: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML ({err}); fix the {what}.") from err
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping ({what}).")
    return loaded


def load_preset(name: str, presets_dir: str | Path | Sequence[str | Path]) -> Preset:
    """Find preset ``name`` and validate its ``preset.yaml`` and ``config.yaml``."""
    if not PRESET_NAME_RE.match(name or ""):
        raise ConfigError(
            f"config key 'preset': name '{name}' may only hold letters, digits, '.', '_', '-'"
        )
    dirs = _dirs(presets_dir)
    folder = next((d / name for d in dirs if (d / name / "preset.yaml").is_file()), None)
    if folder is None:
        raise ConfigError(
            f"config key 'preset': preset '{name}' not found (no {name}/preset.yaml in "
            f"{', '.join(map(str, dirs))}). Available presets: "
            f"{', '.join(list_presets(dirs)) or 'none'} (config/presets/README.md)."
        )
    spec = _load_yaml(folder / "preset.yaml", "preset's record and mapping")
    errors = schema_errors(spec, PRESET_SCHEMA)
    if errors:
        raise ConfigError(f"{folder / 'preset.yaml'} is invalid:\n  - " + "\n  - ".join(errors)
                          + "\nconfig/presets/README.md explains every key.")
    overrides: dict[str, Any] = {}
    cfg = folder / "config.yaml"
    if cfg.is_file():
        overrides = _load_yaml(cfg, "config keys of the preset")
        for key in ("preset", "samples"):
            if key in overrides:
                raise ConfigError(f"{cfg} must not set `{key}`; the preset itself decides it")
        errors = schema_errors(overrides, CONFIG_SCHEMA)
        if errors:
            raise ConfigError(f"{cfg} (preset '{name}') is invalid:\n  - "
                              + "\n  - ".join(errors) + "\nIt may only hold config keys "
                              "(config/README.md); the species comes from the resolved sheet.")
    return Preset(name, folder.resolve(), spec, overrides)


def apply_preset(config: Mapping[str, Any], presets_dir: str | Path | Sequence[str | Path],
                 cli_overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``config`` with ``config["preset"]`` applied: defaults < preset < command line, and
    ``samples`` pointing at the sheet the preset resolves to. Without a preset the config
    is returned unchanged (as a new dict)."""
    name = config.get("preset")
    if not name:
        return dict(config)
    preset = load_preset(str(name), presets_dir)
    merged = deep_update(deep_update(config, preset.overrides), cli_overrides or {})
    merged["samples"] = str(preset.sheet_path)
    return merged


# ------------------------------------------------------------------------ resolution


def _writable(folder: Path) -> bool:
    """A folder the run may write the lock into: writable, and with a write bit (a folder
    made read-only with chmod counts as read-only even for root)."""
    return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)


def lock_for(preset: Preset) -> LockFile:
    """The preset's lock: beside preset.yaml, or under results/ when the folder is
    read-only (seeded with the shipped pins)."""
    shipped = preset.folder / "lock.tsv"
    if _writable(preset.folder):
        return LockFile(shipped)
    local = preset.results / "lock.tsv"
    if shipped.is_file() and not local.exists():
        replace_text(local, shipped.read_text(encoding="utf-8"))
    return LockFile(local)


@dataclass
class ResolvedPreset:
    """A preset resolved for this run: its sheet, file table and lock."""

    preset: Preset
    lock: LockFile
    rows: list[dict[str, str]]
    files: pd.DataFrame
    summary: str

    @property
    def sheet_path(self) -> Path:
        """The sheet the run uses."""
        return self.preset.sheet_path

    def check_sheet(self, samples: pd.DataFrame) -> None:
        """Checks of the resolved sheet in place of those of a hand-written one: one
        species, and every row a url row whose files the lock verifies."""

        species = samples["species"].unique().tolist()
        if len(species) != 1:
            raise SampleSheetError(f"{self.sheet_path} mixes species {species}")
        missing = samples.index[samples["url"] == ""].tolist()
        if missing:
            raise SampleSheetError(f"{self.sheet_path}: samples {missing} have no url; "
                                   "resolve the preset again (delete the sheet).")
        url_samples(samples, pinned_by_lock=True)


def resolve_preset(preset: Preset, fetch_config: Mapping[str, Any]) -> ResolvedPreset:
    """Read the preset's record, map it to sheet rows, write ``samples.tsv`` and
    ``files.tsv`` under results/preset/NAME/, and check cached downloads against the lock."""

    settings = FetchSettings.from_config(fetch_config)
    source = preset.spec["source"]
    label = f"preset {preset.name} ({describe(source)})"
    record_id = source.get("accession") or source.get("collection") or preset.name
    cache = RecordCache(Path(settings.cache_dir) / RECORDS_DIR / record_id, settings, label,
                        refresh=settings.update_lock)
    rows = sheet_rows(preset.spec, records(preset.spec, cache, label), label)
    lock = lock_for(preset)
    pins = lock.read()
    files = []
    for url in dict.fromkeys(u for r in rows for u in r["url"].split()):
        cached = Path(settings.cache_dir) / url_key(url) / url_basename(url)
        state = check_cached(cached, lock, url)
        pin = lock.get(url) if state == "pinned" else pins.get(url)
        files.append({"file": url_basename(url), "url": url,
                      "samples": ",".join(r["sample"] for r in rows if url in r["url"].split()),
                      "size": pin.size if pin else "", "sha256": pin.sha256 if pin else "",
                      "pinned": pin.pinned if pin else "", "cache": str(cached),
                      "cached": state in ("verified", "pinned")})
    table = pd.DataFrame(files)
    sheet = pd.DataFrame(rows)
    columns = list(SHEET_COLUMNS) + [c for c in sheet.columns if c not in SHEET_COLUMNS]
    replace_text(preset.sheet_path, sheet[columns].to_csv(sep="\t", index=False))
    replace_text(preset.results / "files.tsv", table.to_csv(sep="\t", index=False))
    return ResolvedPreset(preset, lock, rows, table, _summary(preset, label, rows, table, lock))


def _summary(preset: Preset, label: str, rows: list[dict[str, str]], files: pd.DataFrame,
             lock: LockFile) -> str:
    groups = Counter((r["tissue"], r["condition"]) for r in rows)
    pinned = int((files["sha256"] != "").sum())
    lines = [
        f"{label}: {len(rows)} samples ("
        + ", ".join(f"{t} {c}: {n}" for (t, c), n in sorted(groups.items()))
        + f"), {len(files)} files, {pinned} pinned in {lock.path}"
        + ("" if pinned == len(files) else " (the others are pinned on first download)"),
        f"  sheet {preset.sheet_path}, files {preset.results / 'files.tsv'}",
    ]
    width = max(len(r["sample"]) for r in rows)
    lines += [f"  {r['sample']:<{width}}  {r['tissue']}  {r['condition']}  replicate "
              f"{r['replicate']}  ({r['record']}, {len(r['url'].split())} file(s))"
              for r in rows]
    return "\n".join(lines)


def resolve_active_preset(config: Mapping[str, Any],
                          presets_dir: str | Path | Sequence[str | Path],
                          *, echo: bool = True) -> ResolvedPreset | None:
    """Resolve ``config["preset"]`` (a validated config) and print what the run will use;
    None without a preset."""
    if not config.get("preset"):
        return None
    preset = load_preset(str(config["preset"]), presets_dir)
    resolved = resolve_preset(preset, config["fetch"])
    if echo:
        print(resolved.summary, file=sys.stderr)
    return resolved


__all__ = ["PRESET_NAME_RE", "Preset", "PresetError", "ResolvedPreset", "apply_preset",
           "list_presets", "load_preset", "lock_for", "resolve_active_preset",
           "resolve_preset"]
