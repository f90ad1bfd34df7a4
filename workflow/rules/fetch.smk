# Fetch url rows of the sample sheet into the shared cache and unpack them.
#
# Needs: config["samples"] = path of the sample sheet (TSV); optional config["fetch"] block
# (cache_dir, retries, backoff_s, max_backoff_s, connect_timeout_s, read_timeout_s).
# The readable path of a url row is mscflow.fetch.fetched_path(row, config):
#   results/fetched/{sample}/10x_mtx | results/fetched/{sample}/matrix.h5 | .../matrix.h5ad
# See docs/fetching.md.

import mscflow.fetch as _fetch

_FETCH_SETTINGS = _fetch.FetchSettings.from_config(config)
_FETCH_SPECS = (
    _fetch.url_samples(_fetch.read_sheet(config["samples"])) if config.get("samples") else {}
)
_FETCH_CACHE = _fetch.cache_index(_FETCH_SPECS, _FETCH_SETTINGS.cache_dir)
_FETCH_CACHE_DIR = str(_FETCH_SETTINGS.cache_dir).rstrip("/")


def _fetch_spec(wildcards):
    """The validated url row of {sample}; a clear error for samples without a url."""
    try:
        return _FETCH_SPECS[wildcards.sample]
    except KeyError:
        raise ValueError(
            f"sample '{wildcards.sample}' has no `url` row in {config.get('samples')}; "
            "only url rows are fetched (rows with `path` are read in place)."
        ) from None


def _fetch_cached_file(wildcards):
    """Cache path of the file that holds {sample}."""
    return str(_FETCH_CACHE[_fetch_spec(wildcards).sha256])


rule fetch_url:
    output:
        _FETCH_CACHE_DIR + "/{sha256}/{filename}",
    wildcard_constraints:
        sha256="[0-9a-f]{64}",
        filename="[^/]+",
    params:
        urls=lambda wc: _fetch.urls_for(_FETCH_SPECS, wc.sha256),
        samples=lambda wc: sorted(s for s, v in _FETCH_SPECS.items() if v.sha256 == wc.sha256),
        settings=_FETCH_SETTINGS,
    log:
        "logs/fetch/fetch_url/{sha256}.{filename}.log",
    threads: 1
    resources:
        mem_mb=512,
        runtime=240,
        fetch_slots=1,
    conda:
        "../../envs/fetch.yaml"
    script:
        "../scripts/fetch_sample.py"


rule unpack_10x_mtx:
    input:
        _fetch_cached_file,
    output:
        directory("results/fetched/{sample}/10x_mtx"),
    wildcard_constraints:
        sample="[^/]+",
    params:
        spec=_fetch_spec,
    log:
        "logs/fetch/unpack/{sample}.10x_mtx.log",
    threads: 1
    resources:
        mem_mb=1024,
        runtime=120,
    conda:
        "../../envs/fetch.yaml"
    script:
        "../scripts/fetch_sample.py"


rule unpack_matrix_file:
    input:
        _fetch_cached_file,
    output:
        "results/fetched/{sample}/matrix.{ext}",
    wildcard_constraints:
        sample="[^/]+",
        ext="h5|h5ad",
    params:
        spec=_fetch_spec,
    log:
        "logs/fetch/unpack/{sample}.{ext}.log",
    threads: 1
    resources:
        mem_mb=1024,
        runtime=120,
    conda:
        "../../envs/fetch.yaml"
    script:
        "../scripts/fetch_sample.py"
