"""envs/*.yaml stay consistent with pyproject.toml (conda cannot run here, pip can)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONDA_TO_PYPI = {"python-igraph": "igraph", "matplotlib-base": "matplotlib",
                 "seaborn-base": "seaborn"}
SPEC = re.compile(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*(.*)$")


def parse(requirement: str) -> tuple[str, str]:
    """(normalised name, version specifier without spaces)."""
    match = SPEC.match(requirement.strip())
    assert match, requirement
    name = match.group(1).lower().replace("_", "-")
    return CONDA_TO_PYPI.get(name, name), match.group(2).replace(" ", "")


def pyproject_deps() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return dict(parse(r) for r in project["dependencies"])


def env_files() -> list[Path]:
    return sorted((REPO / "envs").glob("*.yaml"))


def conda_deps(path: Path) -> tuple[dict[str, str], list[str]]:
    env = yaml.safe_load(path.read_text())
    conda, pip = {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip.extend(dep.get("pip", []))
        else:
            name, spec = parse(dep.replace("=", "==", 1) if re.match(r"^[\w.-]+=[^=]", dep)
                               else dep)
            conda[name] = spec
    return conda, pip


@pytest.mark.parametrize("path", env_files(), ids=lambda p: p.name)
def test_env_specs_match_pyproject(path: Path) -> None:
    deps = pyproject_deps()
    conda, pip = conda_deps(path)
    assert conda.get("python") == "==3.11", "envs pin python 3.11 like requires-python"
    for name, spec in conda.items():
        if name in ("python", "pip"):
            continue
        assert name in deps, f"{path.name}: {name} is not a dependency in pyproject.toml"
        assert spec == deps[name], f"{path.name}: {name}{spec} != pyproject {name}{deps[name]}"
    assert "-e ../" in pip, f"{path.name} must install the mscflow package itself"


def test_main_env_has_every_runtime_dependency() -> None:
    conda, _ = conda_deps(REPO / "envs" / "mscflow.yaml")
    missing = sorted(set(pyproject_deps()) - set(conda) - {"snakemake"})
    assert not missing, f"envs/mscflow.yaml lacks {missing}"


def test_every_rule_names_an_existing_env() -> None:
    for rule_file in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for env in re.findall(r'conda:\s*\n\s*"([^"]+)"', rule_file.read_text()):
            assert (rule_file.parent / env).resolve().is_file(), f"{rule_file.name}: {env}"
