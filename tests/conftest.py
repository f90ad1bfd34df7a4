"""Shared fixtures (one demo run of the workflow per test session) and the test lanes.

Lanes (markers, see README "Tests"): ``unit`` in-process tests of the package (seconds each),
``workflow`` Snakemake runs and the demo, ``slow`` a second demo run, ``cluster`` a real
SLURM controller. A test that uses a workflow fixture is in the workflow lane, one that uses
the SLURM fixture in the cluster lane, without being marked by hand; every other test that
carries no lane marker is a unit test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TABULA_MURIS = REPO / "tests" / "data" / "tabula-muris-lung-10X_P7_8"
# Smaller than the shipped demo (1,200 cells a sample) to keep the suite fast.
TEST_CELLS_PER_SAMPLE = 500


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
    for sub in ("genesets", "orthologs"):
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


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo workflow run once, end to end, with its report."""
    workdir = make_workdir(tmp_path_factory.mktemp("demo_run"))
    start = time.monotonic()
    run_snakemake(workdir, "--cores", "2")
    (workdir / "wall_seconds.txt").write_text(f"{time.monotonic() - start:.1f}\n")
    return workdir


# Fixtures that run Snakemake (or a scheduler): a test using one is not a unit test.
WORKFLOW_FIXTURES = {"demo_run", "small_inputs", "report_html"}
CLUSTER_FIXTURES = {"slurm"}
LANES = ("unit", "workflow", "slow", "cluster")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put every test in its lane: by its markers, else by the fixtures it uses, else unit."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & CLUSTER_FIXTURES:
            item.add_marker(pytest.mark.cluster)
        if used & WORKFLOW_FIXTURES:
            item.add_marker(pytest.mark.workflow)
        if not any(item.get_closest_marker(lane) for lane in LANES):
            item.add_marker(pytest.mark.unit)
