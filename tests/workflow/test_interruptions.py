"""Issue 9: interrupted runs leave nothing a later step would trust and resume to the same
results; a second snakemake on the same working directory is refused by the lock.

Kept cheap: two demo samples of 300 cells, targets up to results/cluster/.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import run_snakemake, small_workdir, snakemake_cmd

SAMPLES = ["lung_control_1", "lung_MSC_1"]
TARGET = "results/cluster/clustered.h5ad"


def _outputs(workdir: Path) -> dict[str, object]:
    """The results compared between runs: QC tables, markers, clusters, embeddings."""
    import anndata as ad

    adata = ad.read_h5ad(workdir / TARGET)
    out: dict[str, object] = {
        "obs": adata.obs.sort_index(axis=1),
        "umap": pd.DataFrame(adata.obsm["X_umap"], index=adata.obs_names),
        "markers": pd.read_csv(workdir / "results/cluster/markers.tsv", sep="\t"),
        "agreement": pd.read_csv(workdir / "results/cluster/resolution_agreement.tsv", sep="\t"),
    }
    for sample in SAMPLES:
        out[f"summary_{sample}"] = pd.read_csv(
            workdir / f"results/qc/{sample}_summary.tsv", sep="\t")
    return out


def _leftover_temp_files(workdir: Path) -> list[Path]:
    return [p for p in (workdir / "results").rglob(".*.tmp")]


def test_kill_midway_then_resume_matches_uninterrupted(small_inputs: Path,
                                                        tmp_path: Path) -> None:
    reference = small_workdir(tmp_path / "reference", small_inputs, SAMPLES)
    run_snakemake(reference, "--cores", "2", TARGET)

    workdir = small_workdir(tmp_path / "interrupted", small_inputs, SAMPLES)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(snakemake_cmd(workdir, "--cores", "2", TARGET), stdout=log,
                             stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        cluster_log = workdir / "logs" / "cluster" / "cluster.log"
        deadline = time.monotonic() + 300
        while not cluster_log.exists() and first.poll() is None:
            assert time.monotonic() < deadline, "the cluster job never started"
            time.sleep(0.2)
        assert first.poll() is None, "the run ended before it could be interrupted"

        # A second snakemake on the same directory is refused by Snakemake's lock.
        second = run_snakemake(workdir, "--cores", "1", TARGET, check=False)
        assert second.returncode != 0
        assert "Directory cannot be locked" in second.stdout + second.stderr
        assert first.poll() is None, "the refused run disturbed the running one"

        # SIGTERM to the run and its jobs (what Ctrl-C or a scheduler's kill does).
        os.killpg(first.pid, signal.SIGTERM)
        first.wait(timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        log.close()
    assert first.returncode != 0
    assert not (workdir / TARGET).exists(), "a killed job left its output under the final name"
    assert _leftover_temp_files(workdir) == []
    assert "terminated by signal 15" in cluster_log.read_text()
    qc_files = sorted((workdir / "results" / "qc").glob(f"{SAMPLES[0]}*"))
    mtimes = {p: p.stat().st_mtime_ns for p in qc_files}
    assert mtimes, "the QC jobs finished before the kill and must be kept"

    rerun = run_snakemake(workdir, "--cores", "2", TARGET)  # no --unlock needed
    assert "Directory cannot be locked" not in rerun.stderr
    assert {p: p.stat().st_mtime_ns for p in qc_files} == mtimes, "finished jobs were redone"
    assert _leftover_temp_files(workdir) == []

    expected, got = _outputs(reference), _outputs(workdir)
    for key, frame in expected.items():
        if key == "umap":
            pd.testing.assert_frame_equal(got[key], frame, check_exact=False, atol=1e-4)
        else:
            pd.testing.assert_frame_equal(got[key], frame, obj=key)


def test_atomic_writers_leave_nothing_when_interrupted(tmp_path: Path, monkeypatch) -> None:
    """A write that dies midway leaves neither the final name nor its temporary file."""
    import anndata as ad
    import numpy as np

    from mscflow.io import write_h5ad_atomic, write_table_atomic

    def half_write(self, filename, **kwargs):  # noqa: ANN001
        Path(filename).write_bytes(b"\x89HDF\r\n\x1a\n partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(ad.AnnData, "write_h5ad", half_write)
    with pytest.raises(KeyboardInterrupt):
        write_h5ad_atomic(ad.AnnData(np.ones((2, 2))), tmp_path / "x.h5ad")
    monkeypatch.setattr(pd.DataFrame, "to_csv", lambda self, path, **kw: (
        Path(path).write_text("a\tb\n1"), (_ for _ in ()).throw(OSError("disk full")))[1])
    with pytest.raises(OSError, match="disk full"):
        write_table_atomic(pd.DataFrame({"a": [1]}), tmp_path / "x.tsv")
    assert list(tmp_path.iterdir()) == []


def test_gzipped_tables_are_identical_bytes_on_rewrite(tmp_path: Path) -> None:
    """A .tsv.gz carries neither a timestamp nor the random temporary name in its header."""
    from mscflow.io import write_table_atomic

    table = pd.DataFrame({"cell": ["a", "b"], "score": [0.5, float("nan")]})
    write_table_atomic(table, tmp_path / "one.tsv.gz", na_rep="NA")
    write_table_atomic(table, tmp_path / "two.tsv.gz", na_rep="NA")
    assert (tmp_path / "one.tsv.gz").read_bytes() == (tmp_path / "two.tsv.gz").read_bytes()
    back = pd.read_csv(tmp_path / "one.tsv.gz", sep="\t")
    pd.testing.assert_frame_equal(back, table)


def test_sigterm_removes_pending_temp_file(tmp_path: Path) -> None:
    """A rule script killed with SIGTERM mid-write exits at once and removes its temp file."""
    code = textwrap.dedent(f"""
        import sys, time, tempfile
        from pathlib import Path
        import mscflow.io as io
        from mscflow.job import setup_logging
        setup_logging({str(tmp_path / "job.log")!r})
        tmp = tempfile.mkstemp(prefix=".out.h5ad.", suffix=".tmp", dir={str(tmp_path)!r})[1]
        io._PENDING.add(tmp)
        print("writing", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    assert len(list(tmp_path.glob(".out.h5ad.*.tmp"))) == 1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert list(tmp_path.glob(".out.h5ad.*.tmp")) == []
    assert "terminated by signal 15" in (tmp_path / "job.log").read_text()
