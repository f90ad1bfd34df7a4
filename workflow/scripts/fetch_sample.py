"""Snakemake script for fetch.smk: download one cached file, or unpack one sample.

``fetch_url`` downloads ``params.urls`` (mirrors of one file) to ``output[0]`` and checks
the sha256 taken from the output path; the ``unpack_*`` rules unpack ``input[0]`` for
``params.spec``. Every message goes to ``log[0]``; errors also reach Snakemake's output.
"""

import logging
import sys
from pathlib import Path

from mscflow import fetch


def _setup_log(path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handlers = [logging.FileHandler(path), logging.StreamHandler(sys.stderr)]
    logging.basicConfig(level=logging.INFO, handlers=handlers,
                        format="%(asctime)s %(levelname)s %(message)s", force=True)


def run(smk) -> None:
    """Do the job described by the Snakemake object ``smk``."""
    _setup_log(smk.log[0])
    try:
        if smk.rule == "fetch_url":
            fetch.download(smk.params.urls, smk.output[0], smk.wildcards.sha256,
                           sample=",".join(smk.params.samples), settings=smk.params.settings)
        else:
            fetch.unpack(smk.params.spec, smk.input[0], smk.output[0])
    except fetch.FetchError as err:
        logging.getLogger("mscflow.fetch").error("%s", err)
        raise SystemExit(1) from err


run(snakemake)  # noqa: F821 - injected by Snakemake
