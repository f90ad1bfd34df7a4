# Gene-set scoring with the compiled kernel: programmes (macrophage, efferocytosis, IL-10)
# and the marker sets of the annotation. Scatter-gather: one pass of gene statistics over
# all cells (control genes, z-scores and AUCell ranks depend on every cell), one job per
# sample scoring its cells with them (the same scores as one job, to the bit), one gather.
# Needs from common.smk: config, SAMPLES, final_outputs, scaled_mem_mb, scaled_runtime,
# sample_share, inputs_share, H5AD_MB.

final_outputs("results/scores/scores.parquet")


rule scoring_gene_stats:
    input:
        h5ad="results/cluster/clustered.h5ad",
    output:
        "results/scores/gene_stats.npz",
    params:
        method=config["scoring"]["method"],
    log:
        "logs/scores/gene_stats.log",
    benchmark:
        "benchmarks/scores/scoring_gene_stats.tsv"
    threads: 2
    resources:
        # the matrix is streamed in chunks; obs is read whole
        mem_mb=scaled_mem_mb(1500, 0.1 * H5AD_MB),
        runtime=scaled_runtime(10, 0.01),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/scoring_gene_stats.py"


rule score_sample:
    input:
        h5ad="results/cluster/clustered.h5ad",
        library="results/genesets/library.json",
        stats="results/scores/gene_stats.npz",
    output:
        scores="results/scores/per_sample/{sample}.parquet",
        markers="results/scores/per_sample/{sample}_markers.parquet",
    params:
        scoring=report_json(config["scoring"]),
        seed=config["seed"],
    log:
        "logs/scores/sample_{sample}.log",
    benchmark:
        "benchmarks/scores/score_sample/{sample}.tsv"
    threads: 1
    resources:
        # the sample's rows of the matrix, and every cell's obs
        mem_mb=scaled_mem_mb(1200, 3 * H5AD_MB, share=sample_share()),
        runtime=scaled_runtime(10, 0.02, share=sample_share()),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/score_sample.py"


rule gather_scores:
    input:
        h5ad="results/cluster/clustered.h5ad",
        scores=expand("results/scores/per_sample/{sample}.parquet", sample=SAMPLES),
        markers=expand("results/scores/per_sample/{sample}_markers.parquet", sample=SAMPLES),
    output:
        scores="results/scores/scores.parquet",
        table="results/scores/scores.tsv.gz",
        markers="results/scores/marker_scores.parquet",
    log:
        "logs/scores/gather_scores.log",
    benchmark:
        "benchmarks/scores/gather_scores.tsv"
    threads: 1
    resources:
        # the score tables (the h5ad only for its obs names)
        mem_mb=scaled_mem_mb(1000, 6, share=inputs_share("scores", "markers")),
        runtime=scaled_runtime(10, 0.05, share=inputs_share("scores", "markers")),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/gather_scores.py"
