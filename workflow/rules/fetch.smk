# Fetch url rows of the sample sheet into the shared cache and unpack them.
#
# Needs from common.smk: FETCH_SPECS (url rows of the sheet), FETCH_CACHE_DIR, FETCH_LOCK (the
# preset's lock.tsv, or "" without a preset). The readable path of a url row is
# mscflow.inputs.fetch.fetched_path(row):
#   results/fetched/{sample}/10x_mtx | results/fetched/{sample}/matrix.h5 | .../matrix.h5ad
# The cache key is the file's sha256 (sheet rows) or url-<digest> (preset files, verified
# against FETCH_LOCK). Params hold nothing that changes when a file gets pinned, so pinning
# never triggers a rerun. See docs/fetching.md.

rule fetch_url:
    output:
        f"{FETCH_CACHE_DIR}/{{key}}/{{filename}}",
    wildcard_constraints:
        key="[0-9a-f]{64}|url-[0-9a-f]{24}",
        filename="[^/]+",
    params:
        urls=lambda wc: mscflow.inputs.fetch.urls_for(FETCH_SPECS, wc.key),
        samples=lambda wc: mscflow.inputs.fetch.samples_for(FETCH_SPECS, wc.key),
        lock=FETCH_LOCK,
        settings=config["fetch"],
    log:
        "logs/fetch/fetch_url/{key}.{filename}.log",
    benchmark:
        "benchmarks/fetch/fetch_url/{key}.{filename}.tsv"
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
        fetch_cached_files,
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
        fetch_cached_files,
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
