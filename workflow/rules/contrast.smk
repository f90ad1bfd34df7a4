# Replicate-aware condition contrasts: score shifts, composition, pseudobulk DE, GSEA and
# their report plots. Each script calls one stage of mscflow.contrast.stages.
# Needs from common.smk: config (validated, schema defaults filled), final_outputs,
# scaled_mem_mb, scaled_runtime, H5AD_MB.
CONTRAST_DIR = "results/contrasts"
CONTRAST_NAMES = [str(c["name"]) for c in config["contrasts"]]
CONTRAST_COMMON = dict(
    contrasts=report_json(config["contrasts"]),
    settings=report_json(config["contrast_settings"]),
)
GENESET_LIBRARY = "results/genesets/library.json"
contrast_tables(**{
    analysis: f"{CONTRAST_DIR}/{analysis}.parquet"
    for analysis in ("score_shifts", "composition", "pseudobulk_de", "gsea")
})

if CONTRAST_NAMES:
    final_outputs(
        *(f"{CONTRAST_DIR}/{table}.{ext}" for table in
          ("score_shifts", "composition", "pseudobulk_de", "gsea") for ext in ("tsv", "parquet")),
        f"{CONTRAST_DIR}/summary.tsv",
        f"{CONTRAST_DIR}/plots/score_shifts_forest.png",
        f"{CONTRAST_DIR}/plots/composition_bars.png",
        *expand(f"{CONTRAST_DIR}/plots/volcano_{{contrast}}.png", contrast=CONTRAST_NAMES),
        *expand(f"{CONTRAST_DIR}/plots/gsea_{{contrast}}.png", contrast=CONTRAST_NAMES),
    )


rule contrast_score_shifts:
    input:
        h5ad="results/annotate/annotated.h5ad",
        samples=config["samples"],
    output:
        tsv=report(
            f"{CONTRAST_DIR}/score_shifts.tsv",
            caption="../report/contrast_score_shifts.rst",
            category="Contrasts",
            subcategory="Score shifts",
            labels={"table": "score shifts"},
        ),
        parquet=f"{CONTRAST_DIR}/score_shifts.parquet",
        per_sample=f"{CONTRAST_DIR}/score_per_sample.tsv",
    params:
        **CONTRAST_COMMON,
    log:
        "logs/contrasts/score_shifts.log",
    benchmark:
        "benchmarks/contrasts/score_shifts.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1500, H5AD_MB),
        runtime=scaled_runtime(15, 0.005 * H5AD_MB),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/contrast_score_shifts.py"


rule contrast_composition:
    input:
        h5ad="results/annotate/annotated.h5ad",
        samples=config["samples"],
    output:
        tsv=report(
            f"{CONTRAST_DIR}/composition.tsv",
            caption="../report/contrast_composition.rst",
            category="Contrasts",
            subcategory="Composition",
            labels={"table": "composition tests"},
        ),
        parquet=f"{CONTRAST_DIR}/composition.parquet",
        proportions=f"{CONTRAST_DIR}/composition_proportions.tsv",
    params:
        **CONTRAST_COMMON,
    log:
        "logs/contrasts/composition.log",
    benchmark:
        "benchmarks/contrasts/composition.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1500, H5AD_MB),
        runtime=scaled_runtime(10, 0.005 * H5AD_MB),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/contrast_composition.py"


rule contrast_pseudobulk_de:
    input:
        h5ad="results/annotate/annotated.h5ad",
        samples=config["samples"],
        # raw counts, read one sample at a time (the annotated file keeps none)
        counts=expand("results/qc/{sample}.h5ad", sample=SAMPLES),
    output:
        tsv=f"{CONTRAST_DIR}/pseudobulk_de.tsv",
        parquet=f"{CONTRAST_DIR}/pseudobulk_de.parquet",
    params:
        **CONTRAST_COMMON,
    log:
        "logs/contrasts/pseudobulk_de.log",
    benchmark:
        "benchmarks/contrasts/pseudobulk_de.tsv"
    threads: 2
    resources:
        # one sample's counts at a time, beside the cells' labels
        mem_mb=scaled_mem_mb(2000, 6 * H5AD_MB, share=largest_input_share("counts")),
        runtime=scaled_runtime(60, 0.02 * H5AD_MB),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/contrast_pseudobulk_de.py"


rule contrast_gsea:
    input:
        de=f"{CONTRAST_DIR}/pseudobulk_de.parquet",
        library=GENESET_LIBRARY,
    output:
        tsv=report(
            f"{CONTRAST_DIR}/gsea.tsv",
            caption="../report/contrast_gsea_table.rst",
            category="Contrasts",
            subcategory="GSEA",
            labels={"table": "GSEA (prerank)"},
        ),
        parquet=f"{CONTRAST_DIR}/gsea.parquet",
    params:
        settings=report_json(config["contrast_settings"]),
    log:
        "logs/contrasts/gsea.log",
    benchmark:
        "benchmarks/contrasts/gsea.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1500, 10),
        runtime=scaled_runtime(30, 0.5),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/contrast_gsea.py"


rule contrast_summary:
    input:
        unpack(lambda wc: CONTRAST_TABLES),
    output:
        tsv=report(
            f"{CONTRAST_DIR}/summary.tsv",
            caption="../report/contrast_summary.rst",
            category="Contrasts",
            subcategory="Summary",
            labels={"table": "tests per contrast"},
        ),
    log:
        "logs/contrasts/summary.log",
    benchmark:
        "benchmarks/contrasts/summary.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(750, 6),
        runtime=scaled_runtime(5, 0.05),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/contrast_summary.py"


rule contrast_plot_forest:
    input:
        shifts=f"{CONTRAST_DIR}/score_shifts.parquet",
    output:
        png=report(
            f"{CONTRAST_DIR}/plots/score_shifts_forest.png",
            caption="../report/contrast_forest.rst",
            category="Contrasts",
            subcategory="Score shifts",
            labels={"figure": "forest plot"},
        ),
    params:
        settings=report_json(config["contrast_settings"]),
    log:
        "logs/contrasts/plot_forest.log",
    benchmark:
        "benchmarks/contrasts/plot_forest.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(750, 6),
        runtime=scaled_runtime(5, 0.05),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/contrast_plot_forest.py"


rule contrast_plot_composition:
    input:
        proportions=f"{CONTRAST_DIR}/composition_proportions.tsv",
        tests=f"{CONTRAST_DIR}/composition.parquet",
    output:
        png=report(
            f"{CONTRAST_DIR}/plots/composition_bars.png",
            caption="../report/contrast_composition_bars.rst",
            category="Contrasts",
            subcategory="Composition",
            labels={"figure": "composition per sample"},
        ),
    log:
        "logs/contrasts/plot_composition.log",
    benchmark:
        "benchmarks/contrasts/plot_composition.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(750, 6),
        runtime=scaled_runtime(5, 0.05),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/contrast_plot_composition.py"


rule contrast_plot_volcano:
    input:
        de=f"{CONTRAST_DIR}/pseudobulk_de.parquet",
    output:
        png=report(
            f"{CONTRAST_DIR}/plots/volcano_{{contrast}}.png",
            caption="../report/contrast_volcano.rst",
            category="Contrasts",
            subcategory="Pseudobulk DE",
            labels={"figure": "volcano", "contrast": "{contrast}"},
        ),
    params:
        fdr=config["contrast_settings"]["fdr"],
    wildcard_constraints:
        contrast="|".join(map(re.escape, CONTRAST_NAMES)) if CONTRAST_NAMES else "$^",
    log:
        "logs/contrasts/plot_volcano_{contrast}.log",
    benchmark:
        "benchmarks/contrasts/plot_volcano_{contrast}.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(750, 10),
        runtime=scaled_runtime(5, 0.1),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/contrast_plot_volcano.py"


rule contrast_plot_gsea:
    input:
        de=f"{CONTRAST_DIR}/pseudobulk_de.parquet",
        gsea=f"{CONTRAST_DIR}/gsea.parquet",
        library=GENESET_LIBRARY,
    output:
        png=report(
            f"{CONTRAST_DIR}/plots/gsea_{{contrast}}.png",
            caption="../report/contrast_gsea.rst",
            category="Contrasts",
            subcategory="GSEA",
            labels={"figure": "GSEA enrichment", "contrast": "{contrast}"},
        ),
    params:
        settings=report_json(config["contrast_settings"]),
    wildcard_constraints:
        contrast="|".join(map(re.escape, CONTRAST_NAMES)) if CONTRAST_NAMES else "$^",
    log:
        "logs/contrasts/plot_gsea_{contrast}.log",
    benchmark:
        "benchmarks/contrasts/plot_gsea_{contrast}.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1250, 10),
        runtime=scaled_runtime(5, 0.1),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/contrast_plot_gsea.py"
