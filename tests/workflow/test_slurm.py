"""Cluster execution through a real SLURM controller with profiles/slurm.

The SLURM tests need a running cluster whose `sinfo` and `sacct` answer: on CI, .ci/run starts
one with .ci/slurm/install.sh and .ci/slurm/start.sh (a single node on localhost, with
slurmdbd accounting and memory enforcement). Without one they are skipped with the reason;
with MSCFLOW_REQUIRE_SLURM=1 in the environment they fail instead, so CI cannot skip them
silently.

Every workflow here runs `snakemake --profile profiles/slurm`, unchanged except for
test-only overrides on the command line: status checks start after 2 s instead of 20 s (to
keep the tests short) and SLURM logs of successful jobs are kept (to assert on them).
Timings are written to tests/artifacts/slurm_*.json.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import make_workdir

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "profiles" / "slurm"
ARTIFACTS = REPO / "tests" / "artifacts"
RUN_TIMEOUT_S = 1500
TEST_OVERRIDES = [
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--slurm-keep-successful-logs",
]
SUBMITTED = re.compile(
    r"Job (?P<job>\S+) has been submitted with SLURM jobid (?P<slurm>\d+) \(log: (?P<log>[^)]+)\)"
)


# --- helpers ------------------------------------------------------------------------------


def _answers(*cmd: str) -> bool:
    if shutil.which(cmd[0]) is None:
        return False
    try:
        return subprocess.run(cmd, capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _slurm_missing_reason() -> str | None:
    if shutil.which("sinfo") is None:
        return "SLURM is not installed (no sinfo): run .ci/slurm/install.sh and start.sh"
    if not _answers("sinfo", "-h"):
        return "no SLURM controller answers sinfo: run .ci/slurm/start.sh"
    if not _answers("sacct", "-n", "-X"):
        return (
            "SLURM answers sinfo but not sacct (no accounting): profiles/slurm polls job "
            "states with sacct; start the test cluster with .ci/slurm/start.sh"
        )
    return None


@pytest.fixture(scope="module")
def slurm() -> None:
    reason = _slurm_missing_reason()
    if reason is None:
        return
    if os.environ.get("MSCFLOW_REQUIRE_SLURM") == "1":
        pytest.fail(f"MSCFLOW_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


def _snakemake(workdir: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run snakemake in workdir with this interpreter; return the result and wall seconds."""
    cmd = [sys.executable, "-m", "snakemake", "--directory", str(workdir), *args]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    elapsed = time.monotonic() - start
    (workdir / f"snakemake-{int(start * 1000)}.out").write_text(
        f"$ {' '.join(cmd)}\nexit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )
    return proc, elapsed


def _via_slurm(workdir: Path, *args: str):
    return _snakemake(workdir, "--profile", str(PROFILE), *TEST_OVERRIDES, *args)


def _output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def _submissions(proc: subprocess.CompletedProcess) -> list[dict[str, str]]:
    """SLURM submissions that snakemake reported: snakemake job id, SLURM job id, log."""
    return [m.groupdict() for m in SUBMITTED.finditer(_output(proc))]


def _sacct(job_ids: list[str]) -> dict[str, dict[str, str]]:
    """sacct records (allocations only) of the given SLURM job ids."""
    fields = [
        "JobID",
        "State",
        "ExitCode",
        "ReqMem",
        "Comment",
        "NodeList",
        "Submit",
        "Start",
        "End",
    ]
    proc = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", ",".join(fields)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = [
        dict(zip(fields, line.split("|"), strict=True)) for line in proc.stdout.splitlines() if line
    ]
    return {row["JobID"]: row for row in rows}


def _sacct_settled(job_ids: list[str], timeout_s: float = 30) -> dict[str, dict[str, str]]:
    """sacct records once every job has reached a final state in the accounting database."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = _sacct(job_ids)
        settled = len(records) == len(job_ids) and all(
            r["State"] not in ("PENDING", "RUNNING", "COMPLETING") for r in records.values()
        )
        if settled or time.monotonic() > deadline:
            return records
        time.sleep(1)


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under root by relative path: its bytes, decompressed for .gz files (a gzip
    header carries the time it was written, which is not part of the result)."""
    tree = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        tree[str(path.relative_to(root))] = gzip.decompress(data) if path.suffix == ".gz" else data
    return tree


def _seconds(timestamp: str) -> float:
    return time.mktime(time.strptime(timestamp, "%Y-%m-%dT%H:%M:%S"))


def _write_artifact(name: str, data: dict) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / name).write_text(json.dumps(data, indent=2) + "\n")
    print(f"{name}: {json.dumps(data)}")


# --- a small self-contained workflow --------------------------------------------------------

TEST_SNAKEFILE = """
from mscflow.resources import scaled_mem_mb, scaled_runtime

import os
import sys

ITEMS = ["a", "b", "c"]
HOG_MB = int(config.get("hog_mb", 0))
HOG_BASE_MB = int(config.get("hog_base_mb", 200))

localrules: all


def where(log):
    # Record the SLURM job and the interpreter that ran this job (a run: block runs inside
    # the job's own snakemake process).
    with open(log, "w") as fh:
        print(f"SLURM_JOB_ID={{os.environ.get('SLURM_JOB_ID', 'none')}}", file=fh)
        print(f"python={{sys.executable}}", file=fh)


rule all:
    input:
        expand("results/items/{{item}}.txt", item=ITEMS),
        "results/summary.txt",
        ["results/hog.txt"] if HOG_MB else [],
        ["results/flaky.txt"] if config.get("flaky") else [],


rule item:
    output: "results/items/{{item}}.txt"
    log: "logs/item/{{item}}.log"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(base_mb=100, per_input_mb=0),
        runtime=scaled_runtime(base_min=2),
    run:
        where(log[0])
        import hashlib
        digest = hashlib.sha256(wildcards.item.encode()).hexdigest()
        with open(output[0], "w") as fh:
            print(wildcards.item, digest, file=fh)


rule summary:
    input: expand("results/items/{{item}}.txt", item=ITEMS)
    output: "results/summary.txt"
    log: "logs/summary.log"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(base_mb=100, per_input_mb=10),
        runtime=scaled_runtime(base_min=2),
    run:
        where(log[0])
        with open(output[0], "w") as out:
            for path in input:
                out.write(open(path).read())


# Holds HOG_MB of resident memory for 3 s: with HOG_BASE_MB too small for attempt 1,
# SLURM kills it; the retry asks for twice the memory and passes.
rule hog:
    output: "results/hog.txt"
    log: "logs/hog.log"
    threads: 1
    params: mb=HOG_MB
    resources:
        mem_mb=scaled_mem_mb(base_mb=HOG_BASE_MB, per_input_mb=0),
        runtime=scaled_runtime(base_min=2),
    shell:
        "echo SLURM_JOB_ID=${{{{SLURM_JOB_ID:-none}}}} > {{log}}; "
        "python -c 'import time; b = b\\"x\\" * ({{params.mb}} * 2**20); time.sleep(3); "
        "print(\\"held\\", len(b) >> 20, \\"MB\\")' > {{output}} 2>> {{log}}"


# Fails until a file FIXED exists in the working directory.
rule flaky:
    input: "results/summary.txt"
    output: "results/flaky.txt"
    log: "logs/flaky.log"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(base_mb=100, per_input_mb=0),
        runtime=scaled_runtime(base_min=2),
    shell:
        "if [ -e FIXED ]; then cp {{input}} {{output}}; "
        "else echo 'flaky: deliberate failure (create FIXED to fix it)' > {{log}}; exit 3; fi"
"""


def _test_workflow(directory: Path) -> Path:
    directory.mkdir(parents=True)
    (directory / "Snakefile").write_text(TEST_SNAKEFILE.format())
    return directory


def _log_fields(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


# --- resource helpers (no SLURM needed) -----------------------------------------------------


def _resources_namespace() -> dict:
    import mscflow.resources

    return vars(mscflow.resources)


def test_resource_helpers_scale_with_input_size_and_attempt(tmp_path):
    ns = _resources_namespace()
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (10 * 1024**2))
    mem = ns["scaled_mem_mb"](base_mb=1000, per_input_mb=4)
    overhead = ns["SNAKEMAKE_JOBSTEP_MB"]
    assert mem(None, [str(big)], 1) == overhead + 1000 + 40
    assert mem(None, [str(big)], 2) == 2 * (overhead + 1000 + 40)
    assert mem(None, [], 1) == overhead + 1000
    capped = ns["scaled_mem_mb"](base_mb=1000, per_input_mb=4, max_mb=2000)
    assert capped(None, [str(big)], 3) == 2000
    half = ns["scaled_mem_mb"](base_mb=1000, per_input_mb=4, share=lambda wc, inputs: 0.5)
    assert half(None, [str(big)], 2) == 2 * (overhead + 1000 + 20)
    runtime = ns["scaled_runtime"](base_min=10, per_input_mb=0.5)
    assert runtime(None, [str(big)], 1) == 15
    assert runtime(None, [str(big)], 3) == 45
    quarter = ns["scaled_runtime"](base_min=10, per_input_mb=0.5, share=lambda wc, inputs: 0.25)
    assert quarter(None, [str(big)], 1) == 12
    folder = tmp_path / "matrix"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "matrix.mtx.gz").write_bytes(b"\0" * (5 * 1024**2))
    (folder / "barcodes.tsv.gz").write_bytes(b"\0" * (5 * 1024**2))
    assert mem(None, [str(folder), str(big)], 1) == overhead + 1000 + 80
    missing = str(tmp_path / "not-yet")
    with pytest.raises(FileNotFoundError) as err:  # snakemake defers until inputs exist
        mem(None, [missing], 1)
    assert err.value.filename == missing


def test_largest_input_share_asks_for_the_largest_file_read_one_at_a_time(tmp_path):
    """Pseudobulk reads the per-sample QC files one at a time: its request follows the
    largest of them, not their sum (nor the annotated file beside them)."""
    from snakemake.iocontainers import InputFiles

    ns = _resources_namespace()
    sizes = {"annotated.h5ad": 30, "a.h5ad": 10, "b.h5ad": 20}
    for name, mb in sizes.items():
        (tmp_path / name).write_bytes(b"\0" * (mb * 1024**2))
    inputs = InputFiles([str(tmp_path / name) for name in sizes])  # as Snakemake flattens them
    inputs._set_name("h5ad", 0)
    inputs._set_name("counts", 1, end=3)
    share = ns["largest_input_share"]("counts")
    assert share(None, inputs) == pytest.approx(20 / 60)
    mem = ns["scaled_mem_mb"](base_mb=1000, per_input_mb=4, share=share)
    assert mem(None, inputs, 1) == ns["SNAKEMAKE_JOBSTEP_MB"] + 1000 + 80


def test_sample_share_follows_the_sample_cells_and_inputs_share_the_named_inputs(tmp_path):
    """Per-sample jobs read one sample's rows of the merged h5ad: their requests follow its
    cells over all cells (read once per file version); a gather job's follow the tables."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    from snakemake.iocontainers import InputFiles, Wildcards

    ns = _resources_namespace()
    obs = pd.DataFrame({"sample": pd.Categorical(["a"] * 30 + ["b"] * 10 + ["a"] * 20)},
                       index=[f"c{i}" for i in range(60)])
    merged = tmp_path / "merged.h5ad"
    ad.AnnData(np.zeros((60, 2), dtype=np.float32), obs=obs).write_h5ad(merged)
    table = tmp_path / "a.parquet"
    table.write_bytes(b"\0" * (2 * 1024**2))
    inputs = InputFiles([str(merged), str(table)])
    inputs._set_name("h5ad", 0)
    inputs._set_name("tables", 1, end=2)
    share = ns["sample_share"]()
    assert share(Wildcards(fromdict={"sample": "a"}), inputs) == pytest.approx(50 / 60)
    assert share(Wildcards(fromdict={"sample": "b"}), inputs) == pytest.approx(10 / 60)
    assert share(Wildcards(fromdict={"sample": "gone"}), inputs) == 0
    total = merged.stat().st_size + table.stat().st_size
    assert ns["inputs_share"]("tables")(None, inputs) == pytest.approx(
        table.stat().st_size / total)


def test_every_rule_asks_for_memory_and_time_that_grow_with_attempt():
    """A job killed for memory or time is retried (profiles: retries) with more of both."""
    rules = Path(__file__).resolve().parents[2] / "workflow" / "rules"
    for smk in rules.glob("*.smk"):
        for block in re.split(r"\n(?=rule |checkpoint )", smk.read_text())[1:]:
            name = block.split(":", 1)[0].split()[-1]
            resources = re.search(r"\n    resources:\n((?:        .*\n)+)", block)
            assert resources, f"{smk.name}: rule {name} declares no resources"
            text = resources.group(1)
            assert re.search(r"mem_mb=scaled_mem_mb\(", text), f"{smk.name}: {name} mem_mb"
            assert re.search(r"runtime=scaled_runtime\(", text), f"{smk.name}: {name} runtime"


# --- SLURM ----------------------------------------------------------------------------------


def test_workflow_through_slurm_matches_local_and_retries_memory_kill(slurm, tmp_path):
    # Attempt 1 asks for 400 + 200 = 600 MB while the job step holds 180-380 MB (snakemake)
    # + 500 MB: SLURM kills it. Attempt 2 asks for 1,200 MB and passes.
    config = ["--config", "hog_mb=500", "hog_base_mb=200"]
    local_dir = _test_workflow(tmp_path / "local")
    local, local_s = _snakemake(local_dir, "--cores", "2", *config)
    assert local.returncode == 0, _output(local)

    slurm_dir = _test_workflow(tmp_path / "slurm")
    proc, slurm_s = _via_slurm(slurm_dir, *config)
    out = _output(proc)
    assert proc.returncode == 0, out

    # Outputs identical to the local run.
    assert _tree(slurm_dir / "results") == _tree(local_dir / "results")

    # Every job was a real SLURM job, visible to sacct with its rule in the comment.
    submitted = _submissions(proc)
    slurm_ids = [s["slurm"] for s in submitted]
    assert len(slurm_ids) == 6, out  # 3 x item, summary, hog twice
    records = _sacct_settled(slurm_ids)
    assert sorted(records) == sorted(slurm_ids), records
    comments = sorted(r["Comment"] for r in records.values())
    assert comments == sorted(
        [
            "rule_item_wildcards_a",
            "rule_item_wildcards_b",
            "rule_item_wildcards_c",
            "rule_summary",
            "rule_hog",
            "rule_hog",
        ]
    ), records

    # Each rule's code ran inside its own SLURM job, with this venv's interpreter.
    by_comment = {r["Comment"]: r for r in records.values()}
    for name, comment in [
        ("item/a", "rule_item_wildcards_a"),
        ("item/b", "rule_item_wildcards_b"),
        ("item/c", "rule_item_wildcards_c"),
        ("summary", "rule_summary"),
    ]:
        fields = _log_fields(slurm_dir / "logs" / f"{name}.log")
        assert fields["SLURM_JOB_ID"] == by_comment[comment]["JobID"]
        assert by_comment[comment]["State"] == "COMPLETED"
        assert fields["python"] == sys.executable
        assert _log_fields(local_dir / "logs" / f"{name}.log")["SLURM_JOB_ID"] == "none"

    # The memory hog: killed by SLURM on attempt 1, resubmitted with twice the memory.
    hog = sorted(
        (r for r in records.values() if r["Comment"] == "rule_hog"), key=lambda r: int(r["JobID"])
    )
    assert [r["ReqMem"] for r in hog] == ["600M", "1200M"], hog
    assert hog[0]["State"] in ("FAILED", "OUT_OF_MEMORY"), hog
    assert hog[1]["State"] == "COMPLETED", hog
    first_log = Path(next(s["log"] for s in submitted if s["slurm"] == hog[0]["JobID"]))
    assert "exceeded memory limit" in first_log.read_text(), first_log.read_text()
    assert "Trying to restart job" in out
    assert _log_fields(slurm_dir / "logs" / "hog.log")["SLURM_JOB_ID"] == hog[1]["JobID"]
    assert (slurm_dir / "results" / "hog.txt").read_text() == "held 500 MB\n"

    # Scheduler overhead: trivial item jobs spend their whole SLURM life in overhead
    # (sbatch, scheduling, two snakemake start-ups inside the job); the status polling
    # adds to the wall time of the whole run.
    items = [r for r in records.values() if r["Comment"].startswith("rule_item")]
    _write_artifact(
        "slurm_overhead.json",
        {
            "jobs_submitted": len(slurm_ids),
            "wall_s_local": round(local_s, 1),
            "wall_s_slurm": round(slurm_s, 1),
            "extra_wall_s_per_submitted_job": round((slurm_s - local_s) / len(slurm_ids), 1),
            "item_job_queue_s_mean": round(
                sum(_seconds(r["Start"]) - _seconds(r["Submit"]) for r in items) / len(items), 1
            ),
            "item_job_run_s_mean": round(
                sum(_seconds(r["End"]) - _seconds(r["Start"]) for r in items) / len(items), 1
            ),
            "status_check_init_s": 2,
        },
    )


def test_failed_job_names_its_log_and_rerun_resumes(slurm, tmp_path):
    workdir = _test_workflow(tmp_path / "wf")
    # Small per-item jobs grouped into one SLURM job, as for cheap per-sample steps; --cores
    # caps the group's CPU request at what the node has (3 x 1 thread would never start).
    args = [
        "--config",
        "flaky=1",
        "--retries",
        "0",
        "--cores",
        "2",
        "--groups",
        "item=items",
        "--group-components",
        "items=3",
    ]

    first, _ = _via_slurm(workdir, *args)
    out = _output(first)
    assert first.returncode != 0, out
    assert "Error in rule flaky" in out, out
    assert "logs/flaky.log" in out, out
    assert "deliberate failure" in (workdir / "logs" / "flaky.log").read_text()
    assert not (workdir / "results" / "flaky.txt").exists()

    # The three grouped item jobs ran in one SLURM allocation.
    item_logs = [workdir / "logs" / "item" / f"{i}.log" for i in "abc"]
    item_jobs = {_log_fields(log)["SLURM_JOB_ID"] for log in item_logs}
    assert len(item_jobs) == 1, item_jobs
    first_ids = [s["slurm"] for s in _submissions(first)]
    assert item_jobs <= set(first_ids)
    records = _sacct_settled(first_ids)
    assert {r["State"] for r in records.values()} == {"COMPLETED", "FAILED"}, records

    done = {p: p.stat().st_mtime_ns for p in (workdir / "results").rglob("*.txt")}
    assert len(done) == 4  # three items and the summary

    # After the fix, the rerun submits only the failed job.
    (workdir / "FIXED").touch()
    second, _ = _via_slurm(workdir, *args)
    assert second.returncode == 0, _output(second)
    resubmitted = _submissions(second)
    assert len(resubmitted) == 1, _output(second)
    assert _sacct_settled([resubmitted[0]["slurm"]])[resubmitted[0]["slurm"]]["Comment"] == (
        "rule_flaky"
    )
    assert {p: p.stat().st_mtime_ns for p in done} == done
    assert (workdir / "results" / "flaky.txt").read_text() == (
        workdir / "results" / "summary.txt"
    ).read_text()


# --- profiles/cluster-generic ----------------------------------------------------------------

GENERIC = REPO / "profiles" / "cluster-generic"


def _scheduler_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("scheduler", GENERIC / "scheduler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generic_pbs_status_and_job_ids():
    sched = _scheduler_module()
    assert sched.pbs_state("    job_state = R\n") == "running"
    assert sched.pbs_state("    job_state = F\n    Exit_status = 0\n") == "success"
    assert sched.pbs_state("    job_state = C\n    exit_status = 271\n") == "failed"
    assert sched.parse_job_id("1234.pbs-server\n") == "1234.pbs-server"


def test_generic_pbs_submit_carries_threads_memory_time_and_queue():
    sched = _scheduler_module()
    props = {
        "rule": "qc",
        "wildcards": {"sample": "lung_1"},
        "threads": 4,
        "resources": {"mem_mb": 8000, "runtime": 90, "queue": "short", "account": "p1"},
    }
    pbs = " ".join(sched.submit_command(props, "job.sh"))
    assert "select=1:ncpus=4:mem=8000mb" in pbs and "walltime=01:30:00" in pbs
    assert "-q short" in pbs and pbs.endswith("job.sh")


# --- the mscflow demo ---------------------------------------------------------------------


# The demo's core path through SLURM: QC, clustering, scores, annotation and the replicate
# tests (the single-node test cluster runs its ~20 jobs one or two at a time; the later
# stages add ~40 more jobs of the same kind, which the local demo run covers).
SLURM_DEMO_TARGETS = ("results/qc/qc_summary.tsv", "results/contrasts/score_shifts.tsv",
                      "results/contrasts/composition.tsv", "results/contrasts/pseudobulk_de.tsv")


def _assert_sample_jobs_follow_their_cells(workdir: Path, records: dict) -> None:
    """Every per-sample scoring and annotation job was submitted with the memory of its
    sample's share of the merged file: attempt 1 x (job-step overhead + base + factor x
    MB of the inputs x the sample's cells / all cells)."""
    import anndata as ad
    import yaml

    from mscflow.config import validate_config
    from mscflow.resources import SNAKEMAKE_JOBSTEP_MB

    cfg = validate_config(yaml.safe_load((workdir / "config/config.yaml").read_text()))
    h5ad_mb = 1.0 if cfg["h5ad_compression"] == "gzip" else 0.25
    clustered = workdir / "results/cluster/clustered.h5ad"
    cells = ad.read_h5ad(clustered, backed="r").obs["sample"].astype(str).value_counts()
    inputs = {"score_sample": [clustered, workdir / "results/genesets/library.json",
                               workdir / "results/scores/gene_stats.npz"],
              "annotate_sample": [clustered]}
    base_factor = {"score_sample": (1200, 3), "annotate_sample": (1200, 4)}
    by_comment = {r["Comment"]: r for r in records.values()}
    for rule, paths in inputs.items():
        size_mb = sum(p.stat().st_size for p in paths) / 1024**2
        base, factor = base_factor[rule]
        for sample, n in cells.items():
            share = n / cells.sum()
            expected = math.ceil(SNAKEMAKE_JOBSTEP_MB + base + factor * h5ad_mb * size_mb * share)
            record = by_comment[f"rule_{rule}_wildcards_{sample}"]
            assert record["ReqMem"] == f"{expected}M", (rule, sample, record)


@pytest.mark.slow
def test_demo_through_slurm(slurm, demo_run, tmp_path):
    """The demo's core path through SLURM equals the local demo run of the session (same
    config): every file the SLURM run writes is byte-identical to the local one."""
    slurm_dir = make_workdir(tmp_path / "slurm")
    proc, slurm_s = _via_slurm(slurm_dir, "--snakefile", str(REPO / "Snakefile"),
                               *SLURM_DEMO_TARGETS)
    out = _output(proc)
    assert proc.returncode == 0, out
    local_s = float((demo_run / "wall_seconds.txt").read_text())
    local_dir = demo_run

    submitted = [s["slurm"] for s in _submissions(proc)]
    assert submitted, f"no job was submitted to SLURM:\n{out}"
    # Every job that was not a declared localrule went to SLURM (one submission per job).
    remote_jobs = re.findall(r"^rule \w+:$", out, flags=re.M)
    assert len(remote_jobs) == len(submitted), out
    records = _sacct_settled(submitted)
    assert sorted(records) == sorted(submitted), records
    assert all(r["State"] == "COMPLETED" for r in records.values()), records

    _assert_sample_jobs_follow_their_cells(slurm_dir, records)

    local_results, slurm_results = _tree(local_dir / "results"), _tree(slurm_dir / "results")
    assert all(target.removeprefix("results/") in slurm_results for target in SLURM_DEMO_TARGETS)
    assert set(slurm_results) <= set(local_results), set(slurm_results) - set(local_results)
    differing = [name for name in slurm_results if local_results[name] != slurm_results[name]]
    assert not differing, f"results differ between the local and the SLURM run: {differing}"

    _write_artifact(
        "slurm_demo.json",
        {
            "jobs_submitted": len(submitted),
            "wall_s_local": round(local_s, 1),
            "wall_s_slurm": round(slurm_s, 1),
            "status_check_init_s": 2,
        },
    )
