"""Rules of fetch.smk: download one cached file (``fetch_url``: ``params.urls`` are mirrors
of one file, verified by the sha256 in the output path or by the preset's lock), or unpack
one sample (``unpack_*``: ``input`` holds its file(s), ``params.spec`` its row)."""

from mscflow import job
from mscflow.inputs import fetch

smk = snakemake  # noqa: F821
job.start(smk)
if smk.rule == "fetch_url":
    fetch.fetch_file(smk.params.urls, smk.output[0], smk.wildcards.key, lock_path=smk.params.lock,
                     samples=smk.params.samples,
                     settings=fetch.FetchSettings.from_config(smk.params.settings))
else:
    fetch.unpack(smk.params.spec, list(smk.input), smk.output[0])
