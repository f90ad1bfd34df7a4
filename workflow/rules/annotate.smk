# Cell-type annotation from curated marker sets: per-cell scores, cluster-level decision.
# Scatter-gather: one job per sample sums its cells' expression per cluster (for the
# clusters' top genes and the dot plot), one job decides the labels from the gathered
# scores and sums and writes the annotated h5ad (obs replaced; the matrix copied in HDF5).

final_outputs("results/annotate/clusters.tsv", "results/plots/annotation_dotplot.png")


rule annotate_sample:
    input:
        h5ad="results/cluster/clustered.h5ad",
    output:
        "results/annotate/per_sample/{sample}_expression.npz",
    params:
        cluster_key=default_cluster_key(),
    log:
        "logs/annotate/sample_{sample}.log",
    benchmark:
        "benchmarks/annotate/annotate_sample/{sample}.tsv"
    threads: 1
    resources:
        # the sample's rows of the matrix and their expressed-or-not copy, every cell's obs
        mem_mb=scaled_mem_mb(1200, 4 * H5AD_MB, share=sample_share()),
        runtime=scaled_runtime(10, 0.02, share=sample_share()),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/annotate_sample.py"


rule annotate:
    input:
        h5ad="results/cluster/clustered.h5ad",
        library="results/genesets/library.json",
        scores="results/scores/scores.parquet",
        marker_scores="results/scores/marker_scores.parquet",
        expression=expand("results/annotate/per_sample/{sample}_expression.npz",
                          sample=SAMPLES),
    output:
        h5ad="results/annotate/annotated.h5ad",
        cells="results/annotate/cell_types.tsv.gz",
        clusters=report(
            "results/annotate/clusters.tsv",
            caption="../report/annotation_clusters.rst",
            category="4. Annotation",
            labels={"table": "label per cluster"},
        ),
        dotplot=report(
            "results/plots/annotation_dotplot.png",
            caption="../report/annotation_dotplot.rst",
            category="4. Annotation",
            labels={"figure": "marker sets by label"},
        ),
    params:
        cluster_key=default_cluster_key(),
        annotation=report_json(config["annotation"]),
        compression=config["h5ad_compression"],
    log:
        "logs/annotate/annotate.log",
    benchmark:
        "benchmarks/annotate/annotate.tsv"
    threads: 1
    resources:
        # obs, the score tables and the summed expression; the matrix is copied in HDF5
        # (868k cells, 9.0 GB uncompressed h5ad: 2,552 MB)
        mem_mb=scaled_mem_mb(1500, 0.5 * H5AD_MB),
        runtime=scaled_runtime(20, 0.02),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/annotate.py"
