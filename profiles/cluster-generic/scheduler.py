#!/usr/bin/env python3
"""Submit, status and cancel commands for snakemake-executor-plugin-cluster-generic on PBS.

PBS only (PBS Pro / OpenPBS / Torque): no maintained Snakemake executor plugin covers it.
SLURM, LSF, Grid Engine and HTCondor have their own plugins and profiles (profiles/slurm,
profiles/lsf, profiles/sge, profiles/htcondor; docs/cluster.md). Called by
profiles/cluster-generic/{submit,status,cancel}:

    scheduler.py submit JOBSCRIPT   qsub the job script, print the PBS job id
    scheduler.py status JOBID       print exactly one of: running, success, failed
    scheduler.py cancel JOBID...    qdel the jobs (when snakemake is interrupted)

Resources come from the job's properties, which snakemake writes into every job script
(a line `# properties = {json}`): threads, mem_mb (total MB for the job), runtime (minutes),
and optionally `queue` and `account` (e.g. --default-resources queue=short account=myproj).
Extra qsub options: the resource `cluster_extra` (a string appended as is).

Scheduler logs (stdout and stderr of the job script, joined) go to logs/cluster/ in the
working directory. Standard library only, so any python3 on the submit host can run it.

Not run against a live PBS server here: the qsub/qstat/qdel usage follows the PBS Pro and
Torque manuals.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

LOG_DIR = Path("logs") / "cluster"
OTHER_PROFILES = ("slurm", "lsf", "sge", "htcondor")  # each has its own profile


def check_scheduler() -> None:
    """Refuse a leftover MSCFLOW_SCHEDULER naming a scheduler this script no longer drives."""
    chosen = os.environ.get("MSCFLOW_SCHEDULER", "").strip().lower()
    if chosen and chosen != "pbs":
        where = f"use profiles/{chosen}" if chosen in OTHER_PROFILES else "expected pbs"
        raise SystemExit(
            f"MSCFLOW_SCHEDULER={chosen!r}: profiles/cluster-generic drives PBS only; {where}"
        )


def read_job_properties(jobscript: str) -> dict:
    """The job properties snakemake embeds in the job script."""
    with open(jobscript) as fh:
        for line in fh:
            match = re.match(r"# properties = (.*)", line)
            if match:
                return json.loads(match.group(1))
    raise SystemExit(f"{jobscript}: no '# properties = ...' line (not a snakemake job script)")


def job_label(props: dict) -> str:
    """A short name for logs and job names: rule (or group) plus wildcard values."""
    name = props.get("rule") or props.get("groupid") or "job"
    values = [str(v) for v in (props.get("wildcards") or {}).values()]
    label = "_".join([name, *values])
    return re.sub(r"[^A-Za-z0-9_.-]", "-", label)[:100]


def submit_command(props: dict, jobscript: str) -> list[str]:
    """The qsub command line for one job script."""
    res = props.get("resources") or {}
    threads = int(props.get("threads") or 1)
    mem_mb = res.get("mem_mb")
    runtime = res.get("runtime")
    queue, account = res.get("queue"), res.get("account")
    extra = shlex.split(str(res["cluster_extra"])) if res.get("cluster_extra") else []

    select = f"select=1:ncpus={threads}" + (f":mem={int(mem_mb)}mb" if mem_mb else "")
    cmd = [
        "qsub",
        "-V",
        "-N",
        f"smk-{job_label(props)}"[:15],  # Torque and older PBS cap job names at 15
        "-j",
        "oe",
        "-o",
        f"{LOG_DIR}/",
        "-l",
        select,
    ]
    if runtime:
        hours, minutes = divmod(int(runtime), 60)
        cmd += ["-l", f"walltime={hours:02d}:{minutes:02d}:00"]
    if queue:
        cmd += ["-q", str(queue)]
    if account:
        cmd += ["-A", str(account)]
    return cmd + extra + [jobscript]


def parse_job_id(output: str) -> str:
    """The job id from qsub's output: "<id>.<server>" (array jobs "<id>[].<server>")."""
    text = output.strip()
    match = re.match(r"(\d+(?:\[\d*\])?\.\S+|\d+)", text)
    if not match:
        raise SystemExit(f"cannot find a job id in the qsub output: {text!r}")
    return match.group(1)


def pbs_state(qstat_f: str) -> str:
    """running/success/failed from `qstat -x -f <id>` (PBS Pro) or `qstat -f` (Torque)."""
    state = re.search(r"job_state = (\w)", qstat_f)
    exit_status = re.search(r"(?i)exit_status = (-?\d+)", qstat_f)
    if not state or state.group(1) not in ("F", "C"):
        return "running"  # Q, R, H, W, E (exiting), B, ...
    return "success" if exit_status and exit_status.group(1) == "0" else "failed"


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def job_status(jobid: str) -> str:
    proc = _run(["qstat", "-x", "-f", jobid])
    if proc.returncode != 0:  # Torque has no -x
        proc = _run(["qstat", "-f", jobid])
    if proc.returncode != 0:
        raise SystemExit(f"PBS job {jobid} unknown to qstat: {proc.stderr}")
    return pbs_state(proc.stdout)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("submit", "status", "cancel"):
        print(__doc__, file=sys.stderr)
        return 2
    check_scheduler()
    action, args = argv[0], argv[1:]
    if action == "submit":
        jobscript = args[-1]
        props = read_job_properties(jobscript)
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        cmd = submit_command(props, jobscript)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            print(f"{shlex.join(cmd)} failed ({proc.returncode}): {proc.stderr}", file=sys.stderr)
            return 1
        print(parse_job_id(proc.stdout))
        return 0
    if action == "status":
        print(job_status(args[0]))
        return 0
    return subprocess.run(["qdel", *args]).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
