# Fetch url rows of the sample sheet into the shared cache and unpack them.
#
# Needs from common.smk: FETCH_SPECS (url rows of the sheet), FETCH_SETTINGS (config `fetch`),
# FETCH_CACHE_DIR. The readable path of a url row is mscflow.fetch.fetched_path(row):
#   results/fetched/{sample}/10x_mtx | results/fetched/{sample}/matrix.h5 | .../matrix.h5ad
# See docs/fetching.md.

rule fetch_url:
    output:
        f"{FETCH_CACHE_DIR}/{{sha256}}/{{filename}}",
    wildcard_constraints:
        sha256="[0-9a-f]{64}",
        filename="[^/]+",
    params:
        urls=lambda wc: mscflow.fetch.urls_for(FETCH_SPECS, wc.sha256),
        samples=lambda wc: sorted(s for s, v in FETCH_SPECS.items() if v.sha256 == wc.sha256),
        settings=FETCH_SETTINGS,
    log:
        "logs/fetch/fetch_url/{sha256}.{filename}.log",
    benchmark:
        "benchmarks/fetch/fetch_url/{sha256}.{filename}.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(512, 0),
        runtime=scaled_runtime(240, 0),
        fetch_slots=1,
    conda:
        "../../envs/fetch.yaml"
    script:
        "../scripts/fetch_sample.py"


rule unpack_10x_mtx:
    input:
        fetch_cached_file,
    output:
        directory("results/fetched/{sample}/10x_mtx"),
    wildcard_constraints:
        sample="[^/]+",
    params:
        spec=fetch_spec,
    log:
        "logs/fetch/unpack/{sample}.10x_mtx.log",
    benchmark:
        "benchmarks/fetch/unpack/{sample}.10x_mtx.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1024, 0),
        runtime=scaled_runtime(120, 0.01),
    conda:
        "../../envs/fetch.yaml"
    script:
        "../scripts/fetch_sample.py"


rule unpack_matrix_file:
    input:
        fetch_cached_file,
    output:
        "results/fetched/{sample}/matrix.{ext}",
    wildcard_constraints:
        sample="[^/]+",
        ext="h5|h5ad",
    params:
        spec=fetch_spec,
    log:
        "logs/fetch/unpack/{sample}.{ext}.log",
    benchmark:
        "benchmarks/fetch/unpack/{sample}.{ext}.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1024, 0),
        runtime=scaled_runtime(120, 0.01),
    conda:
        "../../envs/fetch.yaml"
    script:
        "../scripts/fetch_sample.py"
