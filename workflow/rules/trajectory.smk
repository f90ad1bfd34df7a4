# Monocyte -> macrophage trajectory per tissue: PAGA, diffusion pseudotime, programmes and
# cell density along pseudotime, and the condition shift along it (samples as replicates).
# Needs from common.smk: config (validated, schema defaults filled), samples,
# final_outputs, contrast_tables, default_cluster_key, scaled_mem_mb, scaled_runtime, H5AD_MB.
from mscflow.trajectory.core import check_trajectory_config

TRAJECTORY_DIR = "results/trajectory"
# Tissue names and the tissues of root_cells checked against the sheet before any job runs.
check_trajectory_config(config["trajectory"], samples)
contrast_tables(trajectory=f"{TRAJECTORY_DIR}/shifts.parquet")

final_outputs(
    f"{TRAJECTORY_DIR}/trajectory.h5ad",
    f"{TRAJECTORY_DIR}/pseudotime.tsv.gz",
    f"{TRAJECTORY_DIR}/tissues.tsv",
    f"{TRAJECTORY_DIR}/paga_edges.tsv",
    f"{TRAJECTORY_DIR}/programme_bins.tsv",
    f"{TRAJECTORY_DIR}/plots/paga_umap.png",
    f"{TRAJECTORY_DIR}/plots/programmes_along_pseudotime.png",
    f"{TRAJECTORY_DIR}/plots/density_along_pseudotime.png",
)
if config["contrasts"]:
    final_outputs(
        f"{TRAJECTORY_DIR}/shifts.tsv",
        f"{TRAJECTORY_DIR}/shifts.parquet",
        f"{TRAJECTORY_DIR}/pseudotime_per_sample.tsv",
    )


rule trajectory:
    input:
        h5ad="results/annotate/annotated.h5ad",
        marker_scores="results/scores/marker_scores.parquet",
    output:
        h5ad=f"{TRAJECTORY_DIR}/trajectory.h5ad",
        cells=f"{TRAJECTORY_DIR}/pseudotime.parquet",
        cells_tsv=f"{TRAJECTORY_DIR}/pseudotime.tsv.gz",
        tissues=report(
            f"{TRAJECTORY_DIR}/tissues.tsv",
            caption="../report/trajectory_tissues.rst",
            category="5. Trajectory",
            subcategory="PAGA and pseudotime",
            labels={"table": "trajectory per tissue"},
        ),
        edges=report(
            f"{TRAJECTORY_DIR}/paga_edges.tsv",
            caption="../report/trajectory_edges.rst",
            category="5. Trajectory",
            subcategory="PAGA and pseudotime",
            labels={"table": "PAGA edges"},
        ),
        bins=f"{TRAJECTORY_DIR}/programme_bins.tsv",
    params:
        settings=report_json(config["trajectory"]),
        seed=config["seed"],
        cluster_key=default_cluster_key(),
        compression=config["h5ad_compression"],
    log:
        "logs/trajectory/trajectory.log",
    benchmark:
        "benchmarks/trajectory/trajectory.tsv"
    threads: 2
    resources:
        mem_mb=scaled_mem_mb(1500, 0.5 * H5AD_MB),
        runtime=scaled_runtime(15, 0.01 * H5AD_MB),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/trajectory.py"


rule trajectory_shifts:
    input:
        cells=f"{TRAJECTORY_DIR}/pseudotime.parquet",
        tissues=f"{TRAJECTORY_DIR}/tissues.tsv",
        samples=config["samples"],
    output:
        tsv=report(
            f"{TRAJECTORY_DIR}/shifts.tsv",
            caption="../report/trajectory_shifts.rst",
            category="5. Trajectory",
            subcategory="Condition shift",
            labels={"table": "shift along pseudotime"},
        ),
        parquet=f"{TRAJECTORY_DIR}/shifts.parquet",
        per_sample=f"{TRAJECTORY_DIR}/pseudotime_per_sample.tsv",
    params:
        settings=report_json(config["trajectory"]),
        seed=config["seed"],
        contrasts=report_json(config["contrasts"]),
        contrast_settings=report_json(config["contrast_settings"]),
    log:
        "logs/trajectory/shifts.log",
    benchmark:
        "benchmarks/trajectory/shifts.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(750, 10),
        runtime=scaled_runtime(5, 0.1),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/trajectory_shifts.py"


rule trajectory_plot_paga:
    input:
        h5ad=f"{TRAJECTORY_DIR}/trajectory.h5ad",
    output:
        png=report(
            f"{TRAJECTORY_DIR}/plots/paga_umap.png",
            caption="../report/trajectory_paga.rst",
            category="5. Trajectory",
            subcategory="PAGA and pseudotime",
            labels={"figure": "PAGA over the UMAP"},
        ),
    params:
        threshold=config["trajectory"]["paga_threshold"],
    log:
        "logs/trajectory/plot_paga.log",
    benchmark:
        "benchmarks/trajectory/plot_paga.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000, 3 * H5AD_MB),
        runtime=scaled_runtime(5, 0.02),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/trajectory_plot_paga.py"


rule trajectory_plot_programmes:
    input:
        bins=f"{TRAJECTORY_DIR}/programme_bins.tsv",
    output:
        png=report(
            f"{TRAJECTORY_DIR}/plots/programmes_along_pseudotime.png",
            caption="../report/trajectory_programmes.rst",
            category="5. Trajectory",
            subcategory="Programmes along pseudotime",
            labels={"figure": "programme scores along pseudotime"},
        ),
    params:
        sets=report_json(config["trajectory"]["plot_sets"]),
    log:
        "logs/trajectory/plot_programmes.log",
    benchmark:
        "benchmarks/trajectory/plot_programmes.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(750, 10),
        runtime=scaled_runtime(5, 0.1),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/trajectory_plot_programmes.py"


rule trajectory_plot_density:
    input:
        cells=f"{TRAJECTORY_DIR}/pseudotime.parquet",
    output:
        png=report(
            f"{TRAJECTORY_DIR}/plots/density_along_pseudotime.png",
            caption="../report/trajectory_density.rst",
            category="5. Trajectory",
            subcategory="Condition shift",
            labels={"figure": "cell density along pseudotime"},
        ),
    params:
        late_quantile=config["trajectory"]["late_quantile"],
    log:
        "logs/trajectory/plot_density.log",
    benchmark:
        "benchmarks/trajectory/plot_density.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(750, 10),
        runtime=scaled_runtime(5, 0.1),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/trajectory_plot_density.py"
