"""Resource requests for Snakemake rules: mem_mb and runtime from input size and attempt.

Rules use them as ``mem_mb=scaled_mem_mb(base_mb=1000, per_input_mb=6)`` and
``runtime=scaled_runtime(base_min=10, per_input_mb=0.2)``.

Why ``attempt``: with the profile's ``retries: N`` (profiles/slurm/config.yaml), a job that
fails, e.g. killed by SLURM for exceeding its --mem, is submitted again as a new SLURM job
with attempt = 2, 3, ...; these functions then ask for 2x, 3x the first request. A rule-level
``retries:`` would rerun inside the same allocation with the same limit and cannot help.

Why an overhead term: inside each SLURM job the executor runs ``python -m snakemake`` once in
the batch step and once more in the job step (srun) that runs the rule; SLURM counts that
second process (about 180 MB resident, measured with sacct MaxRSS on snakemake 9.27) against
the job's memory, next to the rule's own command.

Inputs that do not exist yet while the DAG is built raise FileNotFoundError, which snakemake
turns into "to be determined" and evaluates again when the job is ready to run, so the
request is always computed from the real input files (never from a missing file taken as 0).
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np

# Resident memory of the `python -m snakemake` job-step process inside each job, in MB, with
# headroom: sacct's MaxRSS ~180 MB, but SLURM's per-second samples reached 380 MB under load
# (2026-12-01: a 357 MB job running a trivial `run:` block was killed for memory).
SNAKEMAKE_JOBSTEP_MB = 400


def _input_size_mb(input):
    """Total size in MB of a job's inputs; a folder input (e.g. a 10x matrix folder) counts
    with every file under it. A missing input raises FileNotFoundError naming it, which
    snakemake takes as "evaluate again once the inputs exist"."""
    total = 0
    for path in input:
        if os.path.isdir(path):
            for folder, _, files in os.walk(path):
                total += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
        else:
            total += os.stat(path).st_size
    return total / 1024**2


def _read_mb(wildcards, input, share):
    """MB of input the job reads: the inputs' size times ``share(wildcards, input)``."""
    size = _input_size_mb(input)
    return size if share is None else size * float(share(wildcards, input))


def largest_input_share(name):
    """A ``share`` for :func:`scaled_mem_mb` and :func:`scaled_runtime` of a job that reads
    the files of its input ``name`` one at a time: the largest of them over all its inputs."""

    def share(wildcards, input):
        total = _input_size_mb(input)
        largest = max((_input_size_mb([path]) for path in input[name]), default=0.0)
        return largest / total if total else 0.0

    return share


def inputs_share(*names):
    """A ``share`` for :func:`scaled_mem_mb` and :func:`scaled_runtime` of a job whose memory
    follows only some of its inputs (``names``; e.g. tables it loads, beside an h5ad whose
    obs names alone it reads)."""

    def share(wildcards, input):
        total = _input_size_mb(input)
        named = sum(_input_size_mb(_as_list(input[name])) for name in names)
        return named / total if total else 0.0

    return share


def sample_share(name="h5ad"):
    """A ``share`` for :func:`scaled_mem_mb` and :func:`scaled_runtime` of a per-sample job
    that reads the rows of ``{sample}`` from the merged h5ad input ``name``: the sample's
    cells over all cells of the file."""

    def share(wildcards, input):
        path = str(input[name])
        counts = _cells_per_sample(path, os.stat(path).st_mtime_ns)
        total = sum(counts.values())
        return counts.get(wildcards.sample, 0) / total if total else 0.0

    return share


@functools.lru_cache(maxsize=4)
def _cells_per_sample(path, mtime_ns):
    """Cells per value of obs column ``sample`` of an h5ad (read once per file version: the
    jobs of every sample ask for it)."""
    import anndata as ad  # noqa: PLC0415  (imported only when a rule needs it)
    import h5py  # noqa: PLC0415

    with h5py.File(path, "r") as f:
        column = ad.io.read_elem(f["obs"]["sample"])
    values, counts = np.unique(np.asarray(column).astype(str), return_counts=True)
    return dict(zip(values.tolist(), counts.tolist(), strict=True))


def _as_list(value):
    return [value] if isinstance(value, str) else list(value)


def scaled_mem_mb(base_mb=1000, per_input_mb=4.0, max_mb=None, share=None):
    """Return a resource function for mem_mb:

        attempt * (SNAKEMAKE_JOBSTEP_MB + base_mb + per_input_mb * <input size in MB> * share)

    rounded up to whole MB and, when max_mb is given, capped at max_mb (set it to the largest
    node's memory: sbatch rejects a job that asks for more than any node has).
    per_input_mb is the rule's peak resident memory per MB of input (e.g. a gzipped sparse
    matrix loaded densely needs far more than its file size); base_mb covers the
    interpreter, imported libraries and fixed-size work. ``share(wildcards, input)``, when
    given, is the part of the input the job reads (e.g. one donor's cells of a shared h5ad,
    :func:`mscflow.inputs.readers.selected_share`); 1 otherwise.
    """
    if base_mb < 0 or per_input_mb < 0:
        raise ValueError("base_mb and per_input_mb must not be negative")

    def mem_mb(wildcards, input, attempt):
        need = SNAKEMAKE_JOBSTEP_MB + base_mb + per_input_mb * _read_mb(wildcards, input, share)
        value = math.ceil(need * attempt)
        return min(value, max_mb) if max_mb is not None else value

    return mem_mb


def scaled_runtime(base_min=10, per_input_mb=0.05, max_min=None, share=None):
    """Return a resource function for runtime (wall time in minutes, sbatch -t):

        attempt * (base_min + per_input_mb * <input size in MB> * share)

    rounded up to whole minutes and capped at max_min when given (a partition's MaxTime);
    ``share`` as in :func:`scaled_mem_mb`.
    A job killed at its time limit (SLURM state TIMEOUT) is retried with a longer limit.
    """
    if base_min <= 0 or per_input_mb < 0:
        raise ValueError("base_min must be positive and per_input_mb not negative")

    def runtime(wildcards, input, attempt):
        value = math.ceil((base_min + per_input_mb * _read_mb(wildcards, input, share)) * attempt)
        return min(value, max_min) if max_min is not None else value

    return runtime
