"""The package's layout: the import-linter contracts of pyproject.toml hold (one layer order,
stages that meet only through files), a back-import breaks them with its chain named, and
the tree keeps one subpackage per stage."""

from __future__ import annotations

import importlib
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

import mscflow

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
STAGES = ("inputs", "demo", "qc", "cluster", "scoring", "annotate", "contrast",
          "communication", "trajectory", "report")
# Top-level modules: the shared bottom layers, the gene-set library, the pre-run check, the CLI.
TOP_LEVEL = {"errors", "vocab", "config", "io", "job", "resources", "plotting", "genesets",
             "run", "cli"}


def lint_imports(src: Path, config: Path) -> subprocess.CompletedProcess:
    """Run import-linter on the package under ``src`` with the contracts of ``config``."""
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} missing: pip install -e '.[test]' installs import-linter")
    return subprocess.run([str(LINT_IMPORTS), "--config", str(config), "--no-cache"],
                          cwd=src, capture_output=True, text=True,
                          env={"PYTHONPATH": str(src), "PATH": str(LINT_IMPORTS.parent)})


def test_layer_and_independence_contracts_hold() -> None:
    proc = lint_imports(REPO / "src", REPO / "pyproject.toml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 kept, 0 broken" in proc.stdout


@pytest.mark.parametrize(("module", "back_import", "chain"), [
    ("config.py", "from mscflow.report import overview", "mscflow.config -> mscflow.report"),
    ("qc/core.py", "from mscflow.cluster import hvg", "mscflow.qc.core -> mscflow.cluster.hvg"),
])
def test_a_back_import_breaks_the_contracts_with_its_chain(tmp_path: Path, module: str,
                                                          back_import: str, chain: str) -> None:
    src = tmp_path / "src"
    shutil.copytree(REPO / "src" / "mscflow", src / "mscflow",
                    ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    target = src / "mscflow" / module
    target.write_text(target.read_text() + f"\n{back_import}  # noqa\n")
    proc = lint_imports(src, REPO / "pyproject.toml")
    assert proc.returncode != 0
    assert chain in proc.stdout, proc.stdout


def test_one_subpackage_per_stage_and_nothing_else_at_the_top() -> None:
    found = {m.name: m.ispkg for m in pkgutil.iter_modules(mscflow.__path__)}
    assert {name for name, ispkg in found.items() if ispkg} == set(STAGES)
    assert {name for name, ispkg in found.items() if not ispkg} == TOP_LEVEL


def test_every_module_imports_on_its_own() -> None:
    for info in pkgutil.walk_packages(mscflow.__path__, "mscflow."):
        importlib.import_module(info.name)


def test_only_the_shared_style_module_picks_the_matplotlib_backend() -> None:
    users = sorted(str(p.relative_to(REPO / "src")) for p in (REPO / "src").rglob("*.py")
                   if 'matplotlib.use("Agg")' in p.read_text())
    assert users == ["mscflow/plotting.py"]
