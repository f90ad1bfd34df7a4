#!/usr/bin/env python3
"""Submit, status and cancel commands for snakemake-executor-plugin-cluster-generic.

One script for SLURM, SGE (Son/Univa/Altair Grid Engine), PBS (PBS Pro / OpenPBS / Torque)
and LSF, called by profiles/cluster-generic/{submit,status,cancel}:

    scheduler.py submit JOBSCRIPT   submit the job script, print the scheduler's job id
    scheduler.py status JOBID       print exactly one of: running, success, failed
    scheduler.py cancel JOBID...    cancel jobs (when snakemake is interrupted)

The scheduler is $MSCFLOW_SCHEDULER (slurm, sge, pbs or lsf); unset, it is guessed from the
commands on PATH (sbatch -> slurm, bsub -> lsf, qsub with qacct -> sge, other qsub -> pbs).

Resources come from the job's properties, which snakemake writes into every job script
(a line `# properties = {json}`): threads, mem_mb (total MB for the job), runtime (minutes),
and optionally `queue` and `account` (e.g. --default-resources queue=short account=myproj).
Scheduler-specific extra options: the resource `cluster_extra` (a string appended as is).

Scheduler logs (stdout and stderr of the job script) go to logs/cluster/ in the working
directory. Standard library only, so any python3 on the submit host can run it.

Only the SLURM branch is exercised by the tests here (tests/test_slurm.py, against a real
SLURM); the SGE, PBS and LSF branches follow those schedulers' manuals and the state
mapping of each is unit-tested on their documented output, not against a live scheduler.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

SCHEDULERS = ("slurm", "sge", "pbs", "lsf")
LOG_DIR = Path("logs") / "cluster"


def detect_scheduler() -> str:
    chosen = os.environ.get("MSCFLOW_SCHEDULER", "").strip().lower()
    if chosen:
        if chosen not in SCHEDULERS:
            raise SystemExit(f"MSCFLOW_SCHEDULER={chosen!r}: expected one of {SCHEDULERS}")
        return chosen
    if shutil.which("sbatch"):
        return "slurm"
    if shutil.which("bsub"):
        return "lsf"
    if shutil.which("qsub"):
        return "sge" if shutil.which("qacct") else "pbs"
    raise SystemExit("no scheduler found (sbatch, bsub, qsub); set MSCFLOW_SCHEDULER")


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


def submit_command(scheduler: str, props: dict, jobscript: str) -> list[str]:
    """The submit command line for one job script."""
    res = props.get("resources") or {}
    threads = int(props.get("threads") or 1)
    mem_mb = res.get("mem_mb")
    runtime = res.get("runtime")
    queue, account = res.get("queue"), res.get("account")
    label = job_label(props)
    log = LOG_DIR / label
    extra = shlex.split(str(res["cluster_extra"])) if res.get("cluster_extra") else []

    if scheduler == "slurm":
        cmd = [
            "sbatch",
            "--parsable",
            "--job-name",
            f"smk-{label}",
            "--output",
            f"{log}-%j.log",
            "--cpus-per-task",
            str(threads),
        ]
        if mem_mb:
            cmd += ["--mem", str(int(mem_mb))]
        if runtime:
            cmd += ["--time", str(int(runtime))]
        if queue:
            cmd += ["--partition", str(queue)]
        if account:
            cmd += ["--account", str(account)]
    elif scheduler == "sge":
        # h_vmem is per slot: divide the job's memory by the slots of the smp environment.
        cmd = [
            "qsub",
            "-terse",
            "-cwd",
            "-V",
            "-N",
            f"smk-{label}",
            "-j",
            "y",
            "-o",
            f"{log}-$JOB_ID.log",
            "-S",
            "/bin/bash",
        ]
        if threads > 1:
            cmd += ["-pe", os.environ.get("MSCFLOW_SGE_PE", "smp"), str(threads)]
        if mem_mb:
            cmd += ["-l", f"h_vmem={math.ceil(int(mem_mb) / threads)}M"]
        if runtime:
            cmd += ["-l", f"h_rt={int(runtime) * 60}"]
        if queue:
            cmd += ["-q", str(queue)]
        if account:
            cmd += ["-P", str(account)]
    elif scheduler == "pbs":
        select = f"select=1:ncpus={threads}" + (f":mem={int(mem_mb)}mb" if mem_mb else "")
        cmd = [
            "qsub",
            "-V",
            "-N",
            f"smk-{label}"[:15],
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
    elif scheduler == "lsf":
        # LSF reads the job script from stdin; -M is in the unit of LSF_UNIT_FOR_LIMITS,
        # given here in MB explicitly.
        cmd = [
            "bsub",
            "-J",
            f"smk-{label}",
            "-o",
            f"{log}-%J.log",
            "-n",
            str(threads),
            "-R",
            "span[hosts=1]",
        ]
        if mem_mb:
            cmd += ["-M", f"{int(mem_mb)}MB", "-R", f"rusage[mem={int(mem_mb)}MB]"]
        if runtime:
            cmd += ["-W", str(int(runtime))]
        if queue:
            cmd += ["-q", str(queue)]
        if account:
            cmd += ["-P", str(account)]
    else:
        raise ValueError(scheduler)
    return cmd + extra + ([] if scheduler == "lsf" else [jobscript])


def parse_job_id(scheduler: str, output: str) -> str:
    """The job id from the submit command's output."""
    text = output.strip()
    if scheduler == "slurm":  # --parsable: "<id>" or "<id>;<cluster>"
        match = re.match(r"(\d+)", text)
    elif scheduler == "sge":  # -terse: "<id>" (or "<id>.<tasks>:1" for arrays)
        match = re.match(r"(\d+)", text)
    elif scheduler == "pbs":  # "<id>.<server>"
        match = re.match(r"(\d+(?:\[\d*\])?\.\S+|\d+)", text)
    else:  # LSF: "Job <id> is submitted to queue <q>."
        match = re.search(r"Job <(\d+)>", text)
    if not match:
        raise SystemExit(f"cannot find a job id in the {scheduler} submit output: {text!r}")
    return match.group(1)


# --- status -----------------------------------------------------------------------------------

SLURM_RUNNING = {
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "SUSPENDED",
    "REQUEUED",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESV_DEL_HOLD",
}


def slurm_state(state: str) -> str:
    """running/success/failed for a SLURM job state ('CANCELLED by 0' -> CANCELLED)."""
    state = state.split()[0].rstrip("+") if state.strip() else ""
    if state == "COMPLETED":
        return "success"
    if state in SLURM_RUNNING or not state:
        return "running"
    # FAILED, OUT_OF_MEMORY, TIMEOUT, CANCELLED, NODE_FAIL, BOOT_FAIL, PREEMPTED (a requeued
    # job shows REQUEUED/PENDING instead), DEADLINE: snakemake resubmits if retries are left.
    return "failed"


def sge_state_from_qacct(text: str) -> str:
    """running/success/failed from `qacct -j <id>` once the job left the queue."""
    fields = dict(re.findall(r"^(\w+)\s+(.*?)\s*$", text, flags=re.M))
    if "exit_status" not in fields:
        return "running"  # not yet accounted
    failed = fields.get("failed", "0").split()[0]
    exit_status = fields["exit_status"].split()[0]
    return "success" if failed == "0" and exit_status == "0" else "failed"


def pbs_state(qstat_f: str) -> str:
    """running/success/failed from `qstat -x -f <id>` (PBS Pro) or `qstat -f` (Torque)."""
    state = re.search(r"job_state = (\w)", qstat_f)
    exit_status = re.search(r"(?i)exit_status = (-?\d+)", qstat_f)
    if not state or state.group(1) not in ("F", "C"):
        return "running"  # Q, R, H, W, E (exiting), B, ...
    return "success" if exit_status and exit_status.group(1) == "0" else "failed"


def lsf_state(stat: str) -> str:
    """running/success/failed from `bjobs -noheader -o stat <id>`."""
    stat = stat.strip()
    if stat == "DONE":
        return "success"
    if stat == "EXIT":
        return "failed"
    return "running"  # PEND, RUN, PSUSP, USUSP, SSUSP, WAIT, UNKWN (transient)


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def job_status(scheduler: str, jobid: str) -> str:
    if scheduler == "slurm":
        proc = _run(["sacct", "-X", "-n", "-P", "-j", jobid, "-o", "State"])
        if proc.returncode == 0 and proc.stdout.strip():
            return slurm_state(proc.stdout.splitlines()[0])
        # no accounting (or not yet recorded): slurmctld keeps jobs for MinJobAge seconds
        proc = _run(["scontrol", "-o", "show", "job", jobid])
        match = re.search(r"JobState=(\S+)", proc.stdout)
        if proc.returncode == 0 and match:
            return slurm_state(match.group(1))
        raise SystemExit(f"SLURM job {jobid} unknown to sacct and scontrol: {proc.stderr}")
    if scheduler == "sge":
        if _run(["qstat", "-j", jobid]).returncode == 0:
            return "running"
        return sge_state_from_qacct(_run(["qacct", "-j", jobid]).stdout)
    if scheduler == "pbs":
        proc = _run(["qstat", "-x", "-f", jobid])
        if proc.returncode != 0:  # Torque has no -x
            proc = _run(["qstat", "-f", jobid])
        if proc.returncode != 0:
            raise SystemExit(f"PBS job {jobid} unknown to qstat: {proc.stderr}")
        return pbs_state(proc.stdout)
    proc = _run(["bjobs", "-noheader", "-o", "stat", jobid])
    if proc.returncode != 0:
        raise SystemExit(f"LSF job {jobid} unknown to bjobs: {proc.stderr}")
    return lsf_state(proc.stdout)


CANCEL = {"slurm": ["scancel"], "sge": ["qdel"], "pbs": ["qdel"], "lsf": ["bkill"]}


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("submit", "status", "cancel"):
        print(__doc__, file=sys.stderr)
        return 2
    scheduler = detect_scheduler()
    action, args = argv[0], argv[1:]
    if action == "submit":
        jobscript = args[-1]
        props = read_job_properties(jobscript)
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        cmd = submit_command(scheduler, props, jobscript)
        stdin = open(jobscript) if scheduler == "lsf" else None
        try:
            proc = subprocess.run(cmd, stdin=stdin, capture_output=True, text=True, timeout=300)
        finally:
            if stdin:
                stdin.close()
        if proc.returncode != 0:
            print(f"{shlex.join(cmd)} failed ({proc.returncode}): {proc.stderr}", file=sys.stderr)
            return 1
        print(parse_job_id(scheduler, proc.stdout))
        return 0
    if action == "status":
        print(job_status(scheduler, args[0]))
        return 0
    return subprocess.run(CANCEL[scheduler] + args).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
