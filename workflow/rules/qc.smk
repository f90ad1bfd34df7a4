# Per-sample QC: read, metrics, MAD outlier flags, doublets, filter; doublet-driven clusters
# once the cells are annotated.

from mscflow.inputs.samplesheet import reading_options

final_outputs(
    "results/qc/qc_summary.tsv",
    "results/qc/plots/qc_distributions.png",
    "results/qc/plots/doublet_scores.png",
    "results/qc/doublet_clusters.tsv",
    "results/qc/plots/doublet_clusters.png",
)


rule qc_sample:
    input:
        data=sample_input,
        files=sample_input_files,
    output:
        h5ad="results/qc/{sample}.h5ad",
        metrics="results/qc/{sample}_metrics.tsv.gz",
        summary="results/qc/{sample}_summary.tsv",
    params:
        meta=lambda wc: sample_metadata(samples, wc.sample),
        fmt=lambda wc: samples.loc[wc.sample, "format"],
        # layer, obs_filter, var_symbols, keep_obs: what to take from an h5ad or loom file
        reading=lambda wc: reading_options(samples, wc.sample),
        qc=report_json(config["qc"]),
        seed=config["seed"],
        compression=config["h5ad_compression"],
    log:
        "logs/qc/{sample}.log",
    benchmark:
        "benchmarks/qc/{sample}.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1500, 8, share=sample_input_share),
        runtime=scaled_runtime(20, 0.05, share=sample_input_share),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/qc_sample.py"


rule qc_summary:
    input:
        summaries=expand("results/qc/{sample}_summary.tsv", sample=SAMPLES),
        metrics=expand("results/qc/{sample}_metrics.tsv.gz", sample=SAMPLES),
    output:
        table=report(
            "results/qc/qc_summary.tsv",
            caption="../report/qc_summary.rst",
            category="1. Quality control",
            subcategory="Cell filters",
            labels={"table": "cells removed per reason"},
        ),
        distributions=report(
            "results/qc/plots/qc_distributions.png",
            caption="../report/qc_distributions.rst",
            category="1. Quality control",
            subcategory="Cell filters",
            labels={"figure": "QC distributions with thresholds"},
        ),
        doublets=report(
            "results/qc/plots/doublet_scores.png",
            caption="../report/doublet_scores.rst",
            category="1. Quality control",
            subcategory="Doublets",
            labels={"figure": "doublet scores"},
        ),
    log:
        "logs/qc/qc_summary.log",
    benchmark:
        "benchmarks/qc/qc_summary.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000, 20),
        runtime=scaled_runtime(10, 0.05),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/qc_summary.py"


rule doublet_clusters:
    input:
        cells="results/annotate/cell_types.tsv.gz",
        clusters="results/annotate/clusters.tsv",
        metrics=expand("results/qc/{sample}_metrics.tsv.gz", sample=SAMPLES),
    output:
        table=report(
            "results/qc/doublet_clusters.tsv",
            caption="../report/doublet_clusters.rst",
            category="1. Quality control",
            subcategory="Doublets",
            labels={"table": "doublet-driven clusters"},
        ),
        figure=report(
            "results/qc/plots/doublet_clusters.png",
            caption="../report/doublet_clusters.rst",
            category="1. Quality control",
            subcategory="Doublets",
            labels={"figure": "doublet-driven clusters"},
        ),
    params:
        max_share=config["qc"]["doublet_cluster_share"],
    log:
        "logs/qc/doublet_clusters.log",
    benchmark:
        "benchmarks/qc/doublet_clusters.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000, 20),
        runtime=scaled_runtime(10, 0.05),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/doublet_clusters.py"
