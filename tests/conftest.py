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
import tempfile
import time
from pathlib import Path

import pytest
from helpers import SMALL_CELLS, make_workdir, run_snakemake


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo workflow run once, end to end, with its report."""
    workdir = make_workdir(tmp_path_factory.mktemp("demo_run"))
    start = time.monotonic()
    run_snakemake(workdir, "--cores", "2")
    (workdir / "wall_seconds.txt").write_text(f"{time.monotonic() - start:.1f}\n")
    return workdir


@pytest.fixture(scope="session")
def small_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Demo inputs at 300 cells a sample (rule make_demo only), made once per session."""
    root = tmp_path_factory.getbasetemp() / "small_inputs"
    demo = root / "resources" / "demo"
    if not (demo / "samples.tsv").exists():
        make_workdir(root, {"demo": {"cells_per_sample": SMALL_CELLS}})
        run_snakemake(root, "--cores", "1", "resources/demo/samples.tsv")
    return demo


# --- the report in headless Chromium ----------------------------------------------------


def _browser_paths() -> tuple[str | None, str | None]:
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)),
                   None)
    return browser, shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium driven by Selenium, with browser and network logs on."""
    chromium, chromedriver = _browser_paths()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as err:  # pragma: no cover - selenium is a test dependency
        chromium, chromedriver, reason = None, None, f"selenium missing ({err})"
    else:
        reason = "chromium and chromedriver not installed (apt-get install chromium " \
                 "chromium-driver, or run .ci/install-system.sh as root)"
    if not (chromium and chromedriver):
        if os.environ.get("MSCFLOW_REQUIRE_CHROMIUM") == "1":
            pytest.fail(f"MSCFLOW_REQUIRE_CHROMIUM=1 but {reason}")
        pytest.skip(reason)
    profile = tempfile.mkdtemp(prefix="mscflow-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                "--window-size=1600,1000",
                # WebGL (the explorer's scattergl) through software rendering, as headless
                # Chromium without a GPU offers it only on request
                "--enable-unsafe-swiftshader"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


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
