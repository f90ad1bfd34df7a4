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
from mscflow.errors import ConfigError
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
    check_annotation_sources(filled["annotation"], samples, filled["samples"])
    parse_contrasts(filled["contrasts"], samples)
    return run


def check_annotation_sources(annotation: Mapping, samples: pd.DataFrame, sheet: str) -> None:
    """``annotation.source`` has what it needs: the published column carried by the sheet's
    ``keep_obs``, a reference model or labelled h5ad, and the files named exist."""
    source, column = annotation["source"], annotation["published_column"]
    if source == "published" and not column:
        raise ConfigError(
            "config key 'annotation': annotation.source is published but "
            "annotation.published_column is not set: name "
            "the input files' label column and list it in the sample sheet's keep_obs.")
    if column:
        from mscflow.inputs.readers import parse_keep_obs  # here: readers imports anndata

        kept = {c for text in samples["keep_obs"] for c in parse_keep_obs(text)}
        if column not in kept:
            raise ConfigError(
                f"config key 'annotation': annotation.published_column '{column}' is not "
                "carried from the input files: "
                f"add it to the keep_obs column of the sample sheet ({sheet}); keep_obs now "
                f"lists {', '.join(sorted(kept)) or 'nothing'}.")
    if source == "reference" and not (annotation["reference_model"]
                                      or annotation["reference_h5ad"]):
        raise ConfigError(
            "config key 'annotation': annotation.source is reference but neither "
            "annotation.reference_model (a "
            "celltypist .pkl) nor annotation.reference_h5ad (a labelled h5ad to train one "
            "from) is set.")
    used = {"published_names": column or source == "reference",
            "reference_model": source == "reference", "reference_h5ad": source == "reference"}
    for key, needed in used.items():
        if needed and annotation[key] and not Path(annotation[key]).is_file():
            raise ConfigError(
                f"config key 'annotation.{key}': file '{annotation[key]}' does not exist "
                "(paths are relative to the working directory); fix the path in config.yaml.")
