# Gene-set scoring with the compiled kernel: programmes (macrophage, efferocytosis, IL-10)
# and the marker sets of the annotation, sharing one pass of gene statistics.

final_outputs("results/scores/scores.parquet")


rule score_programmes:
    input:
        h5ad="results/cluster/clustered.h5ad",
        library="results/genesets/library.json",
    output:
        scores="results/scores/scores.parquet",
        table="results/scores/scores.tsv.gz",
        markers="results/scores/marker_scores.parquet",
    params:
        scoring=config["scoring"],
        seed=config["seed"],
    log:
        "logs/scores/score_programmes.log",
    benchmark:
        "benchmarks/scores/score_programmes.tsv"
    threads: 2
    resources:
        # the matrix is streamed from disk in chunks: the scores tables, not the matrix
        mem_mb=scaled_mem_mb(2000, 0.5 * H5AD_MB),
        runtime=scaled_runtime(20, 0.02),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/score_programmes.py"
