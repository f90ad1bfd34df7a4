# Cell-type annotation from curated marker sets: per-cell scores, cluster-level decision.


rule annotate:
    input:
        h5ad="results/cluster/clustered.h5ad",
        scores="results/scores/scores.parquet",
        markers=config["genesets"]["markers"][species_of_run()],
        synonyms=config["genesets"].get("synonyms", "resources/genesets/symbol_synonyms.tsv"),
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
        species=species_of_run(),
        cluster_key=default_cluster_key(),
        annotation=config.get("annotation", {}),
        min_genes=config["genesets"]["min_genes"],
        seed=config["seed"],
        compression=config["h5ad_compression"],
    log:
        "logs/annotate/annotate.log",
    benchmark:
        "benchmarks/annotate/annotate.tsv"
    threads: 2
    resources:
        mem_mb=scaled_mem_mb(2000, 3 * H5AD_MB),
        runtime=lambda wc, attempt: 20 * attempt,
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/annotate.py"
