"""Helpers of the workflow tests: the repository's paths, a working directory with the
shipped config, and running Snakemake on it (imported by conftest.py and the tests)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"  # screenshots and logs of failed browser checks
TABULA_MURIS = REPO / "tests" / "data" / "tabula-muris-lung-10X_P7_8"
# Smaller than the shipped demo (1,200 cells a sample) to keep the suite fast.
TEST_CELLS_PER_SAMPLE = 500
# The small_inputs fixture: two-sample runs of the interruption, error and gene-set tests.
SMALL_CELLS = 300


def snakemake_cmd(workdir: Path, *args: str) -> list[str]:
    """Command running the repository's workflow in ``workdir`` with this interpreter."""
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
            *args]


def run_snakemake(workdir: Path, *args: str, check: bool = True,
                  timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run snakemake, capture its output, and fail with the tail of it on error."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(snakemake_cmd(workdir, *args), capture_output=True, text=True,
                          env=env, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n"
                    f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def make_workdir(path: Path, config_updates: dict | None = None, *,
                 with_contrasts: bool = True) -> Path:
    """A working directory holding the repository's config and curated resources.

    ``with_contrasts=False`` drops the demo's contrasts, for tests whose own sample sheet
    lacks the demo's tissues or conditions.
    """
    path.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "config", path / "config", dirs_exist_ok=True)
    for sub in ("genesets", "orthologs", "annotation"):
        shutil.copytree(REPO / "resources" / sub, path / "resources" / sub, dirs_exist_ok=True)
    cfg_path = path / "config" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["demo"]["cells_per_sample"] = TEST_CELLS_PER_SAMPLE
    if not with_contrasts:
        cfg["contrasts"] = []
    for key, value in (config_updates or {}).items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def page_problems(driver) -> list[str]:
    """Failed loads, HTTP errors, network requests and console errors since the last call."""
    problems = []
    for entry in driver.get_log("browser"):
        if entry["level"] == "SEVERE":
            problems.append(f"console: {entry['message']}")
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.loadingFailed":
            problems.append(f"failed load: {params.get('errorText')} ({params.get('type')})")
        elif message["method"] == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if re.match(r"^(https?|wss?|ftp):", url):
                problems.append(f"network request: {url}")
        elif message["method"] == "Network.responseReceived":
            status = params["response"].get("status", 0)
            if status >= 400:
                problems.append(f"HTTP {status}: {params['response']['url']}")
    return problems


def small_workdir(path: Path, demo: Path, samples: list[str],
                  config_updates: dict | None = None) -> Path:
    """A working directory whose sheet lists ``samples`` of the demo, copied to data/."""
    make_workdir(path, config_updates, with_contrasts=False)
    sheet = pd.read_csv(demo / "samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    sheet = sheet[sheet["sample"].isin(samples)].copy()
    (path / "data").mkdir()
    for i, row in sheet.iterrows():
        source = demo / Path(row["path"]).name
        copy = shutil.copytree if source.is_dir() else shutil.copy2
        copy(source, path / "data" / source.name)
        sheet.loc[i, "path"] = f"data/{source.name}"
    sheet.to_csv(path / "config" / "samples.tsv", sep="\t", index=False)
    return path
