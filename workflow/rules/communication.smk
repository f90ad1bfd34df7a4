# Cell-cell communication: liana per sample (streamed: one job per sample reads only its
# cells), ligand-receptor interactions tested between conditions (samples as replicates),
# focus axes (IL-10, efferocytosis) reported first, plots. Package: mscflow.communication.sample,
# mscflow.communication.contrast, mscflow.communication.plots.
# Needs from common.smk: config (validated, schema defaults filled), SAMPLES, SPECIES,
# final_outputs, contrast_tables, scaled_mem_mb, scaled_runtime, H5AD_MB; from
# contrast.smk: CONTRAST_DIR, CONTRAST_NAMES.
COMM_DIR = "results/communication"
COMM = config["communication"]
# A sample job holds about its share of the annotated h5ad (plus liana's tables).
COMM_SAMPLE_MB = 6 * H5AD_MB / max(1, len(SAMPLES))

if COMM["enabled"]:
    final_outputs(
        *expand(f"{COMM_DIR}/per_sample/{{sample}}.parquet", sample=SAMPLES),
        *expand(f"{COMM_DIR}/per_sample/{{sample}}_expression.parquet", sample=SAMPLES),
    )
    if CONTRAST_NAMES:
        contrast_tables(communication=f"{COMM_DIR}/interactions.parquet")
        final_outputs(
            f"{COMM_DIR}/interactions.tsv",
            f"{COMM_DIR}/interactions.parquet",
            f"{COMM_DIR}/focus_interactions.tsv",
            f"{COMM_DIR}/focus_per_sample.tsv",
            f"{COMM_DIR}/skipped.tsv",
            f"{COMM_DIR}/cell_types.tsv",
            f"{COMM_DIR}/focus_pairs.tsv",
            *expand(f"{COMM_DIR}/plots/focus_dotplot_{{contrast}}.png", contrast=CONTRAST_NAMES),
            *expand(f"{COMM_DIR}/plots/focus_heatmap_{{contrast}}.png", contrast=CONTRAST_NAMES),
        )


rule communication_sample:
    input:
        h5ad="results/annotate/annotated.h5ad",
    output:
        liana=f"{COMM_DIR}/per_sample/{{sample}}.parquet",
        expression=f"{COMM_DIR}/per_sample/{{sample}}_expression.parquet",
        skipped=f"{COMM_DIR}/per_sample/{{sample}}_skipped.tsv",
    params:
        settings=report_json(COMM),
        species=SPECIES,
        seed=config["seed"],
    log:
        "logs/communication/sample_{sample}.log",
    benchmark:
        "benchmarks/communication/sample_{sample}.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1500, COMM_SAMPLE_MB),
        runtime=scaled_runtime(20, 0.02 * H5AD_MB),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/communication_sample.py"


rule communication_contrasts:
    input:
        expression=expand(f"{COMM_DIR}/per_sample/{{sample}}_expression.parquet",
                          sample=SAMPLES),
        skipped=expand(f"{COMM_DIR}/per_sample/{{sample}}_skipped.tsv", sample=SAMPLES),
        samples=config["samples"],
        score_shifts=f"{CONTRAST_DIR}/score_shifts.parquet",
    output:
        tsv=f"{COMM_DIR}/interactions.tsv",
        parquet=f"{COMM_DIR}/interactions.parquet",
        focus=report(
            f"{COMM_DIR}/focus_interactions.tsv",
            caption="../report/communication_focus.rst",
            category="6. Communication",
            subcategory="Focus axes",
            labels={"table": "focus interactions, tested per contrast"},
        ),
        focus_per_sample=f"{COMM_DIR}/focus_per_sample.tsv",
        skipped=f"{COMM_DIR}/skipped.tsv",
        cell_types=report(
            f"{COMM_DIR}/cell_types.tsv",
            caption="../report/communication_cell_types.rst",
            category="6. Communication",
            subcategory="Cell types and focus pairs",
            labels={"table": "cell types per sample: used or left out"},
        ),
        focus_pairs=report(
            f"{COMM_DIR}/focus_pairs.tsv",
            caption="../report/communication_focus_pairs.rst",
            category="6. Communication",
            subcategory="Cell types and focus pairs",
            labels={"table": "focus axes resolved against the resource"},
        ),
    params:
        contrasts=report_json(config["contrasts"]),
        contrast_settings=report_json(config["contrast_settings"]),
        settings=report_json(COMM),
        species=SPECIES,
        seed=config["seed"],
    log:
        "logs/communication/contrasts.log",
    benchmark:
        "benchmarks/communication/contrasts.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(2000, 8),
        runtime=scaled_runtime(20, 0.2),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/communication_contrasts.py"


rule communication_plots:
    input:
        interactions=f"{COMM_DIR}/interactions.parquet",
    output:
        dotplot=report(
            f"{COMM_DIR}/plots/focus_dotplot_{{contrast}}.png",
            caption="../report/communication_dotplot.rst",
            category="6. Communication",
            subcategory="Focus axes",
            labels={"figure": "focus dot plot", "contrast": "{contrast}"},
        ),
        heatmap=report(
            f"{COMM_DIR}/plots/focus_heatmap_{{contrast}}.png",
            caption="../report/communication_heatmap.rst",
            category="6. Communication",
            subcategory="Focus axes",
            labels={"figure": "focus effects heat map", "contrast": "{contrast}"},
        ),
    params:
        fdr=config["contrast_settings"]["fdr"],
        max_pairs=COMM["plot_max_pairs"],
    wildcard_constraints:
        contrast="|".join(map(re.escape, CONTRAST_NAMES)) if CONTRAST_NAMES else "$^",
    log:
        "logs/communication/plots_{contrast}.log",
    benchmark:
        "benchmarks/communication/plots_{contrast}.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000, 6),
        runtime=scaled_runtime(5, 0.1),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/communication_plots.py"
