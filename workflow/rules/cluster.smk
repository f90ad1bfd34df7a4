# Merge samples, normalise, HVG, PCA, batch integration, neighbours, Leiden at several
# resolutions, UMAP, markers.
from mscflow.cluster.integration import resolve_batch_key

# The sheet column naming each sample's batch (checked here, before any job runs).
BATCH_KEY = resolve_batch_key(samples, config["cluster"]["integration"]["batch_key"])

final_outputs("results/cluster/markers.tsv", "results/cluster/resolution_agreement.tsv")


rule cluster:
    input:
        h5ads=expand("results/qc/{sample}.h5ad", sample=SAMPLES),
    output:
        h5ad="results/cluster/clustered.h5ad",
        markers="results/cluster/markers.tsv",
        agreement=report(
            "results/cluster/resolution_agreement.tsv",
            caption="../report/resolution_agreement.rst",
            category="2. Clustering",
            subcategory="Resolution",
            labels={"table": "resolution comparison"},
        ),
    params:
        cluster=report_json(config["cluster"]),
        batch_key=BATCH_KEY,
        seed=config["seed"],
        compression=config["h5ad_compression"],
    log:
        "logs/cluster/cluster.log",
    benchmark:
        "benchmarks/cluster/cluster.tsv"
    threads: 2
    resources:
        # the merged normalised matrix (~ the QC files' size uncompressed) plus one sample's,
        # one block's or the HVG matrix's copy at a time (250k cells: 4.9 GB peak for 2.5 GB
        # of uncompressed QC files)
        mem_mb=scaled_mem_mb(2000, 6 * H5AD_MB),
        runtime=scaled_runtime(60, 0.05),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/cluster.py"
