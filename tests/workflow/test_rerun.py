"""Changed inputs rerun: a file replaced inside a 10x folder reruns its sample (the folder's
own time stamp does not change when a file in it is rewritten)."""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

import pytest
from helpers import run_snakemake, small_workdir

pytestmark = pytest.mark.workflow
SAMPLE = "lung_control_1"
TARGET = f"results/qc/{SAMPLE}_summary.tsv"


def _planned(workdir: Path) -> str:
    return run_snakemake(workdir, "-n", "--cores", "1", TARGET).stdout


def test_replacing_a_file_inside_a_10x_folder_reruns_the_sample(small_inputs: Path,
                                                                tmp_path: Path) -> None:
    workdir = small_workdir(tmp_path / "w", small_inputs, [SAMPLE])
    run_snakemake(workdir, "--cores", "1", TARGET)
    assert "Nothing to be done" in _planned(workdir)
    folder = workdir / "data" / SAMPLE
    before = os.stat(folder).st_mtime_ns
    matrix = folder / "matrix.mtx.gz"
    with gzip.open(matrix, "rt") as handle:
        lines = handle.read().splitlines(keepends=True)
    body = [i for i, line in enumerate(lines) if not line.startswith("%")][1:]
    row, col, value = lines[body[0]].split()
    lines[body[0]] = f"{row} {col} {int(value) + 5}\n"  # a new count for one cell
    time.sleep(1.1)  # a later time stamp than the outputs on any file system
    replacement = folder / "matrix.new"
    with gzip.open(replacement, "wt") as handle:
        handle.writelines(lines)
    os.replace(replacement, matrix)
    os.utime(folder, ns=(before, before))  # as after an in-place copy: the folder unchanged
    plan = _planned(workdir)
    assert "qc_sample" in plan and "Nothing to be done" not in plan, plan[-2000:]
