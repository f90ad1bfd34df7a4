"""Run overview for the Snakemake report: samples, configuration, software and versions.

Tables here are deterministic for a given input, configuration and software environment
(no dates, no absolute paths), so that two runs of the same workflow give identical files.
"""

from __future__ import annotations

import html
import importlib
import json
import platform
import re
import subprocess
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, packages_distributions, requires, version
from pathlib import Path

import pandas as pd
import session_info2
from packaging.requirements import Requirement

from mscflow.config import Settings, runtime_field, settings_section

SAMPLE_COLUMNS = ("sample", "tissue", "condition", "replicate", "species", "format")
SAMPLES_OVERVIEW_COLUMNS = (*SAMPLE_COLUMNS, "cells_in", "cells_out", "pct_kept")
SOFTWARE_COLUMNS = ("package", "version", "role")
CONFIG_COLUMNS = ("key", "value")
RUN_INFO_COLUMNS = ("item", "value")


@settings_section("report")
class ReportSettings(Settings):
    """Config section ``report`` (keys in the schema, see config/README.md), plus the run's
    seed (the explorer's subsample)."""

    seed: int = runtime_field()


def file_safe_name(label: str) -> str:
    """File-name-safe form of a label (letters, digits, ``_ . -``; others become ``_``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(label)).strip("_.") or "unnamed"


def samples_overview(samples: pd.DataFrame, qc_summary: pd.DataFrame) -> pd.DataFrame:
    """The sample sheet's metadata with cells before and after QC per sample.

    ``samples`` is the sheet (mscflow.inputs.samplesheet.read_sample_sheet), ``qc_summary``
    the table of rule qc_summary (``sample``, ``cells_in``, ``cells_out``; ``dropped`` when
    present).
    Samples without a QC row are an error: the overview must cover every sample.
    """
    meta = samples.reset_index(drop=True)[list(SAMPLE_COLUMNS)]
    qc_cols = ["sample", "cells_in", "cells_out"] + (
        ["dropped"] if "dropped" in qc_summary.columns else [])
    out = meta.merge(qc_summary[qc_cols], on="sample", how="left", validate="one_to_one")
    missing = out.loc[out["cells_in"].isna(), "sample"].tolist()
    if missing:
        raise ValueError(f"QC summary lacks sample(s) {missing}")
    out["cells_in"] = out["cells_in"].astype(int)
    out["cells_out"] = out["cells_out"].astype(int)
    out["pct_kept"] = (100 * out["cells_out"] / out["cells_in"].where(out["cells_in"] > 0)).round(1)
    return out


def flatten_config(config: Mapping, prefix: str = "") -> pd.DataFrame:
    """The configuration as ``key`` (dotted path) and ``value`` (JSON for lists), sorted."""
    rows: list[tuple[str, str]] = []

    def _walk(node: object, path: str) -> None:
        if isinstance(node, Mapping) and node:
            for key, value in node.items():
                _walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, str):
            rows.append((path, node))
        else:
            rows.append((path, json.dumps(node, sort_keys=True, default=str)))

    _walk(config, prefix)
    return pd.DataFrame(sorted(rows), columns=list(CONFIG_COLUMNS))


def declared_requirements(distribution: str = "mscflow") -> list[str]:
    """Names of the distribution's run-time requirements (no extras), as declared."""
    try:
        specs = requires(distribution) or []
    except PackageNotFoundError:
        return []
    return [Requirement(spec).name for spec in specs if not Requirement(spec).marker]


def software_versions(modules: Sequence[str], *, distribution: str = "mscflow") -> pd.DataFrame:
    """Versions of the software that computes the results, read with session-info2.

    ``role`` is ``direct`` for mscflow itself, its declared run-time requirements and any
    distribution whose objects the given modules import at top level; ``dependency`` for any
    other distribution the modules loaded into the process. Python comes first.
    """
    namespace: dict[str, object] = {}
    for name in modules:
        module = importlib.import_module(name)
        namespace.update({f"{name}:{k}": v for k, v in vars(module).items()})
    info = session_info2.SessionInfo(packages_distributions(), namespace, dependencies=True)
    data = json.loads(info.format("json"))
    rows = [("Python", platform.python_version(), "interpreter")]
    rows += [(p["package"], p["version"], "direct") for p in data["packages"]]
    rows += [(name, distribution_version(name), "direct")
             for name in [distribution, *declared_requirements(distribution)]]
    rows += [(p["package"], p["version"], "dependency") for p in data["dependencies"]]
    table = pd.DataFrame(rows, columns=list(SOFTWARE_COLUMNS))
    table = table[table["version"] != "not installed"]
    table = table.assign(_key=table["package"].str.lower().str.replace("_", "-"))
    table = table.drop_duplicates("_key").drop(columns="_key")
    rank = {"interpreter": 0, "direct": 1, "dependency": 2}
    return table.sort_values(["role", "package"], key=lambda s: s.map(rank) if s.name == "role"
                             else s.str.lower()).reset_index(drop=True)


def distribution_version(name: str) -> str:
    """Installed version of a distribution, or ``not installed``."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def git_version(directory: str | Path) -> str:
    """``git describe`` of the repository holding ``directory`` (``unknown`` outside git)."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(directory), "describe", "--always", "--dirty", "--tags"],
            capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else "unknown"


def run_info(config: Mapping) -> pd.DataFrame:
    """Versions of the workflow and its runtime, and every random seed of the run."""
    rows = [
        ("mscflow version", distribution_version("mscflow")),
        ("Snakemake version", distribution_version("snakemake")),
        ("Python version", platform.python_version()),
        ("Platform", f"{platform.system()} {platform.machine()}"),
        ("Sample sheet", str(config.get("samples", ""))),
        ("Random seed (doublets, PCA, neighbours, Leiden, UMAP, scoring, annotation)",
         str(config.get("seed", ""))),
    ]
    if isinstance(config.get("demo"), Mapping) and "seed" in config["demo"]:
        rows.append(("Random seed (demo data)", str(config["demo"]["seed"])))
    return pd.DataFrame(rows, columns=list(RUN_INFO_COLUMNS))


_CSS = """
body { font-family: 'DejaVu Sans', Arial, sans-serif; font-size: 14px; color: #1e293b;
       margin: 1.5em; line-height: 1.4; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #cbd5e1; padding: 3px 8px; text-align: left; }
th { background: #f1f5f9; } tr:nth-child(even) td { background: #f8fafc; }
td.num { text-align: right; } p.note { color: #475569; max-width: 60em; }
"""


def _html_table(table: pd.DataFrame) -> str:
    return table.to_html(index=False, escape=True, border=0, na_rep="",
                         float_format=lambda x: f"{x:g}")


def overview_html(info: pd.DataFrame, samples: pd.DataFrame, software: pd.DataFrame,
                  config: pd.DataFrame, *, workflow_commit: str) -> str:
    """A self-contained HTML page (no external resources) of the run overview."""
    info = pd.concat([pd.DataFrame([("Workflow commit (git describe)", workflow_commit)],
                                   columns=list(RUN_INFO_COLUMNS)), info], ignore_index=True)
    totals = (f"{len(samples)} samples, {int(samples['cells_in'].sum()):,} cells before QC, "
              f"{int(samples['cells_out'].sum()):,} after.")
    direct = software[software["role"] != "dependency"]
    deps = software[software["role"] == "dependency"]
    sections = [
        "<h1>mscflow run overview</h1>",
        "<h2>Workflow, versions and random seeds</h2>", _html_table(info),
        "<h2>Samples</h2>", f"<p class='note'>{html.escape(totals)}</p>", _html_table(samples),
        "<h2>Software that computed the results</h2>",
        "<p class='note'>All rules run in the same software environment "
        "(envs/mscflow.yaml); these are its versions, read with session-info2 from the "
        "modules of mscflow that the rules call. Direct: libraries the mscflow code calls; "
        "dependencies: everything else they loaded.</p>",
        _html_table(direct),
        f"<details><summary>{len(deps)} dependencies</summary>{_html_table(deps)}</details>",
        "<h2>Configuration used</h2>", _html_table(config),
    ]
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>mscflow run overview</title><style>{_CSS}</style></head><body>"
            + "\n".join(sections) + "</body></html>\n")

