"""Presets: public data sets as ready-made sample sheets and settings (config/presets/NAME).

A preset is a folder holding ``samples.tsv`` and an optional ``config.yaml`` whose keys
override the workflow's defaults. ``snakemake --config preset=NAME`` applies it as
defaults < preset < command line and points ``samples`` at the preset's sheet.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mscflow.errors import ConfigError

PRESET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def list_presets(presets_dir: str | Path) -> list[str]:
    """Names of the preset folders (those holding a ``samples.tsv``)."""
    root = Path(presets_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "samples.tsv").is_file())


def load_preset(name: str, presets_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """(sample sheet path, config overrides) of preset ``name``."""
    if not PRESET_NAME_RE.match(name or ""):
        raise ConfigError(
            f"config key 'preset': name '{name}' may only hold letters, digits, '.', '_', '-'"
        )
    folder = Path(presets_dir) / name
    samples = folder / "samples.tsv"
    if not samples.is_file():
        raise ConfigError(
            f"config key 'preset': preset '{name}' not found (no {samples}). Available "
            f"presets: {', '.join(list_presets(presets_dir)) or 'none'}."
        )
    overrides: dict[str, Any] = {}
    cfg = folder / "config.yaml"
    if cfg.is_file():
        loaded = yaml.safe_load(cfg.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{cfg} must hold a mapping of config keys")
        for key in ("preset", "samples"):
            if key in loaded:
                raise ConfigError(f"{cfg} must not set `{key}`; the preset itself decides it")
        overrides = loaded
    return samples.resolve(), overrides


def deep_update(base: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``new``, merging nested mappings key by key."""
    out = dict(base)
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = value
    return out


def apply_preset(config: Mapping[str, Any], presets_dir: str | Path,
                 cli_overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``config`` with ``config["preset"]`` applied: defaults < preset < command line.

    Without a preset the config is returned unchanged (as a new dict).
    """
    name = config.get("preset")
    if not name:
        return dict(config)
    samples, overrides = load_preset(str(name), presets_dir)
    merged = deep_update(deep_update(config, overrides), cli_overrides or {})
    merged["samples"] = str(samples)
    return merged
