# Cell-type annotation from curated marker sets: per-cell scores, cluster-level decision.

final_outputs("results/annotate/clusters.tsv", "results/plots/annotation_dotplot.png")


rule annotate:
    input:
        h5ad="results/cluster/clustered.h5ad",
        library="results/genesets/library.json",
        scores="results/scores/scores.parquet",
        marker_scores="results/scores/marker_scores.parquet",
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
        annotation=config["annotation"],
        compression=config["h5ad_compression"],
    log:
        "logs/annotate/annotate.log",
    benchmark:
        "benchmarks/annotate/annotate.tsv"
    threads: 2
    resources:
        mem_mb=scaled_mem_mb(2000, 3 * H5AD_MB),
        runtime=scaled_runtime(20, 0.02),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/annotate.py"
