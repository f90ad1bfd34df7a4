# Summaries across samples and the figures of the report.

final_outputs(
    "results/summary/cluster_sizes.tsv",
    "results/summary/mean_scores.tsv",
    "results/plots/umap_overview.png",
    "results/plots/umap_scores.png",
    "results/plots/score_violins.png",
    "results/plots/marker_dotplot.png",
)


rule summarise:
    input:
        h5ad="results/annotate/annotated.h5ad",
    output:
        sizes=report(
            "results/summary/cluster_sizes.tsv",
            caption="../report/cluster_sizes.rst",
            category="2. Clustering",
            subcategory="Cluster sizes",
            labels={"table": "cluster sizes per sample"},
        ),
        mean_scores=report(
            "results/summary/mean_scores.tsv",
            caption="../report/mean_scores.rst",
            category="3. Gene-set scores",
            subcategory="Summary",
            labels={"table": "mean scores per cluster and sample"},
        ),
    params:
        cluster_key=default_cluster_key(),
    log:
        "logs/summary/summarise.log",
    benchmark:
        "benchmarks/summary/summarise.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1500, 3 * H5AD_MB),
        runtime=scaled_runtime(10, 0.02),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/summarise.py"


rule plot_embeddings:
    input:
        h5ad="results/annotate/annotated.h5ad",
    output:
        overview=report(
            "results/plots/umap_overview.png",
            caption="../report/umap_overview.rst",
            category="2. Clustering",
            subcategory="Embedding",
            labels={"figure": "UMAP by cluster, sample, condition, cell type"},
        ),
        scores=report(
            "results/plots/umap_scores.png",
            caption="../report/umap_scores.rst",
            category="3. Gene-set scores",
            subcategory="Per gene set",
            labels={"figure": "scores on UMAP"},
        ),
        violins=report(
            "results/plots/score_violins.png",
            caption="../report/score_violins.rst",
            category="3. Gene-set scores",
            subcategory="Per gene set",
            labels={"figure": "scores by cell type and condition"},
        ),
        markers=report(
            "results/plots/marker_dotplot.png",
            caption="../report/marker_dotplot.rst",
            category="2. Clustering",
            subcategory="Markers",
            labels={"figure": "top marker genes per cluster"},
        ),
    params:
        cluster_key=default_cluster_key(),
        report_sets=report_json(config["report"]["score_sets"]),
    log:
        "logs/summary/plot_embeddings.log",
    benchmark:
        "benchmarks/summary/plot_embeddings.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(2000, 3 * H5AD_MB),
        runtime=scaled_runtime(15, 0.02),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/plot_embeddings.py"
