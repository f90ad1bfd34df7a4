# Cell-type annotation from curated marker sets: per-cell scores, cluster-level decision.
# Scatter-gather: one job per sample sums its cells' expression per cluster (for the
# clusters' top genes and the dot plot), one job decides the labels from the gathered
# scores and sums and writes the annotated h5ad (obs replaced; the matrix copied in HDF5).

# annotation.source chooses cell_type: markers (above), published (the authors' labels of
# a keep_obs column, mapped by the names table) or reference (celltypist: a model file, or
# one trained here from a labelled reference h5ad, predicted in one job).

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
        unpack(annotation_source_inputs),
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


rule train_reference_model:
    input:
        ANNOTATION["reference_h5ad"] or [],
    output:
        "results/annotate/reference_model.pkl",
    params:
        label_column=ANNOTATION["reference_label_column"],
        top_genes=ANNOTATION["reference_top_genes"],
        seed=config["seed"],
    log:
        "logs/annotate/train_reference_model.log",
    benchmark:
        "benchmarks/annotate/train_reference_model.tsv"
    threads: 1
    resources:
        # the reference read whole, normalised and scaled (dense copy of its genes)
        mem_mb=scaled_mem_mb(2000, 12),
        runtime=scaled_runtime(20, 0.2),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/train_reference_model.py"


rule annotate_reference:
    input:
        h5ad="results/cluster/clustered.h5ad",
        model=reference_model_file(),
    output:
        "results/annotate/reference_predictions.parquet",
    params:
        cluster_key=default_cluster_key(),
        majority_voting=ANNOTATION["reference_majority_voting"],
    log:
        "logs/annotate/annotate_reference.log",
    benchmark:
        "benchmarks/annotate/annotate_reference.tsv"
    threads: 1
    resources:
        # the clustered matrix read whole; celltypist scales it gene by gene
        mem_mb=scaled_mem_mb(2000, 4 * H5AD_MB),
        runtime=scaled_runtime(20, 0.05),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/annotate_reference.py"
