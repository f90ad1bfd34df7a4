"""The pre-run check: everything ``workflow/rules/common.smk`` checks before any job runs
(preset, config with its defaults, sample sheet, gene-set files, contrasts), callable
without Snakemake. It sits above every stage it asks, so none of them imports it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mscflow.config import deep_update, parse_cli_overrides, validate_config
from mscflow.contrast.settings import parse_contrasts
from mscflow.genesets import check_gene_set_files
from mscflow.inputs.presets import apply_preset, resolve_active_preset
from mscflow.inputs.samplesheet import check_sample_files, check_samples, read_sample_sheet


@dataclass
class Run:
    """A validated run: the config with its defaults and the checked sample sheet."""

    config: dict
    samples: pd.DataFrame
    preset: Any = None  # mscflow.inputs.presets.ResolvedPreset of a preset run (its sheet and lock)

    @property
    def species(self) -> str:
        """The one species of the run (a sheet may not mix species)."""
        return str(self.samples["species"].iloc[0])

    @property
    def sample_ids(self) -> list[str]:
        """Sample ids in sheet order."""
        return list(self.samples.index)


def prepare_run(config: Mapping, *,
                presets_dir: str | Path | Sequence[str | Path] = "config/presets",
                cli_overrides: Mapping | None = None,
                source: str = "config.yaml (with --config)") -> Run:
    """Everything checked before any job runs, in the order a user would fix it: preset,
    config (defaults filled), sample sheet, gene-set files, contrasts.

    Raises :class:`ConfigError` or :class:`~mscflow.errors.SampleSheetError`; each message
    names the key, file, line or sample and the fix (docs/errors.md lists them).
    """
    if cli_overrides:  # Snakemake hands nested --config values over as text
        cli_overrides = parse_cli_overrides(cli_overrides)
        config = deep_update(config, cli_overrides)
    merged = apply_preset(config, presets_dir, cli_overrides)
    filled = validate_config(merged, source=source)
    preset = resolve_active_preset(filled, presets_dir)  # writes the sheet it resolves to
    samples = read_sample_sheet(filled["samples"])
    if preset is None:
        check_samples(samples, sheet_path=filled["samples"], demo_dir=filled["demo"]["outdir"])
    else:
        preset.check_sheet(samples)
    check_sample_files(samples, sheet_path=filled["samples"],
                       demo_dir=filled["demo"]["outdir"])  # h5ad/loom columns
    run = Run(filled, samples, preset)
    check_gene_set_files(filled["genesets"], run.species, filled["scoring"]["sets"])
    parse_contrasts(filled["contrasts"], samples)
    return run
