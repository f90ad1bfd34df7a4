"""What every rule's script does around its work: log to the rule's log file, end at once
on SIGTERM leaving no half-written output, time its steps, and print a user error as one
line instead of a traceback.

A script is::

    from mscflow import job
    log = job.start(snakemake)
    with job.timed("read"):
        ...
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mscflow.errors import MscflowError

log = logging.getLogger("mscflow")


def setup_logging(log_path: str | os.PathLike) -> logging.Logger:
    """Send logging, warnings and uncaught exceptions of a job to ``log_path`` and stderr.

    A :class:`~mscflow.errors.MscflowError` (bad input the user can fix) is logged as its
    message alone and ends the job with exit code 1; any other exception with its traceback.
    On SIGTERM (Ctrl-C of Snakemake, a scheduler's kill) the temporary files of unfinished
    atomic writes are removed and the process ends at once.
    """
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = [handler, logging.StreamHandler(sys.stderr)]
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    sys.excepthook = _excepthook
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    return log


def start(smk: Any) -> logging.Logger:
    """Set up a Snakemake script's job (see :func:`setup_logging`); returns its logger."""
    logger = setup_logging(smk.log[0])
    logger.info("rule %s, %d thread(s)", smk.rule, smk.threads)
    return logger


@contextmanager
def timed(step: str) -> Iterator[None]:
    """Log the wall time of a step as ``step <name>: <seconds> s`` and the process's peak
    resident memory so far as ``peak RSS after <name>: <MB> MB`` (both parsed by
    benchmarks)."""
    import resource

    begin = time.perf_counter()
    yield
    log.info("step %s: %.2f s", step, time.perf_counter() - begin)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    log.info("peak RSS after %s: %.0f MB", step, peak_kb / 1024)


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
    if isinstance(exc, MscflowError):
        log.error("%s", exc)
        logging.shutdown()
        os._exit(1)  # exit code 1 without Python's traceback on stderr
    log.error("%s: %s", exc_type.__name__, exc, exc_info=(exc_type, exc, tb))


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """Remove unfinished atomic writes and end the process at once. ``os._exit`` because an
    exception raised here can be swallowed by native callbacks (numba, h5py) and the job
    would go on."""
    io = sys.modules.get("mscflow.io")
    if io is not None:
        io.remove_pending_files()
    log.error("terminated by signal %d; outputs not written", signum)
    logging.shutdown()
    os._exit(128 + signum)
