"""The executor-plugin profiles (LSF, SGE, HTCondor) parse.

A dry run with each profile in profiles/ must get past profile, executor and executor-settings
parsing (a misspelt key, an unknown executor or an invalid plugin setting makes snakemake exit
non-zero before planning the DAG); it needs no scheduler.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, make_workdir

# profile folder -> the executor plugin's module
PLUGIN_PROFILES = {
    "lsf": "snakemake_executor_plugin_lsf",
    "sge": "snakemake_executor_plugin_sge",
    "htcondor": "snakemake_executor_plugin_htcondor",
}


@pytest.mark.workflow
@pytest.mark.parametrize("profile", sorted(PLUGIN_PROFILES))
def test_plugin_profile_dry_run_parses(profile: str, tmp_path: Path) -> None:
    module = PLUGIN_PROFILES[profile]
    if importlib.util.find_spec(module) is None:
        # lsf and sge are test dependencies; htcondor's plugin pulls the htcondor bindings,
        # which warn on every snakemake start without a CONDOR_CONFIG, so it is optional
        if profile != "htcondor":
            pytest.fail(f"{module} missing: pip install -e '.[test]' installs it")
        pytest.skip(f"{module} is not installed (pip install {module.replace('_', '-')})")
    workdir = make_workdir(tmp_path / profile)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
         "--profile", str(REPO / "profiles" / profile), "-n", "--cores", "1"],
        capture_output=True, text=True, env=env, timeout=600, cwd=workdir,
    )
    out = f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    assert proc.returncode == 0, out
    assert f"profiles/{profile}" in out, out  # the profile was read
    assert "This was a dry-run" in out, out
