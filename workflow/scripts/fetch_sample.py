"""Rules of fetch.smk: download one cached file (``fetch_url``: ``params.urls`` are mirrors
of one file, checked against the sha256 in the output path), or unpack one sample
(``unpack_*``: ``input[0]`` for ``params.spec``)."""

from mscflow import fetch, job

smk = snakemake  # noqa: F821
job.start(smk)
if smk.rule == "fetch_url":
    fetch.download(smk.params.urls, smk.output[0], smk.wildcards.sha256,
                   sample=",".join(smk.params.samples), settings=smk.params.settings)
else:
    fetch.unpack(smk.params.spec, smk.input[0], smk.output[0])
