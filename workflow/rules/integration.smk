# Evidence of the batch integration: mixing and conservation metrics before and after, and
# UMAPs by batch and cell type. Cell types come from the annotation, so this runs after it.

final_outputs("results/cluster/integration_metrics.tsv", "results/plots/integration_umap.png")


rule integration_metrics:
    input:
        h5ad="results/annotate/annotated.h5ad",
    output:
        metrics=report(
            "results/cluster/integration_metrics.tsv",
            caption="../report/integration_metrics.rst",
            category="2. Clustering",
            subcategory="Batch integration",
            labels={"table": "batch mixing and cell-type conservation"},
        ),
        umap=report(
            "results/plots/integration_umap.png",
            caption="../report/integration_umap.rst",
            category="2. Clustering",
            subcategory="Batch integration",
            labels={"figure": "UMAP before and after integration"},
        ),
    params:
        cluster=report_json(config["cluster"]),
        batch_key=BATCH_KEY,
        seed=config["seed"],
    log:
        "logs/cluster/integration_metrics.log",
    benchmark:
        "benchmarks/cluster/integration_metrics.tsv"
    threads: 2
    resources:
        mem_mb=scaled_mem_mb(2000, 1 * H5AD_MB),
        runtime=scaled_runtime(20, 0.02),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/integration_metrics.py"
