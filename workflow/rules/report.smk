# Report-only items: the findings (first category), the interactive explorer and the
# viewer-ready export, the run overview (samples, versions, seeds, software, config), the
# resolution comparison figure and mean-score heatmaps per condition.

from mscflow.report.overview import file_safe_name

# Condition of each heatmap file name (slug -> label as written in the sample sheet).
REPORT_CONDITIONS = {file_safe_name(c): c for c in samples["condition"].unique()}
if len(REPORT_CONDITIONS) != samples["condition"].nunique():
    raise WorkflowError(
        f"conditions {sorted(samples['condition'].unique())} clash once made file-name "
        "safe; rename them in the sample sheet so they differ in letters or digits."
    )

# Modules of mscflow whose imports make up the software table of the run overview.
REPORT_SOFTWARE_MODULES = [
    "mscflow.io",
    "mscflow.qc.core",
    "mscflow.cluster.core",
    "mscflow.scoring.core",
    "mscflow.genesets",
    "mscflow.config",
    "mscflow.annotate.core",
    "mscflow.report.summary",
    "mscflow.contrast",
    "mscflow.plotting",
    "mscflow.contrast.plots",
    "mscflow.qc.doublet_classifier",
    "mscflow.cluster.integration",
    "mscflow.cluster.integration_metrics",
    "mscflow.inputs.readers",
    "mscflow.annotate.labels",
    "mscflow.communication.sample",
    "mscflow.communication.contrast",
    "mscflow.trajectory.core",
    "mscflow.report.findings",
    "mscflow.report.explorer",
    "mscflow.report.export",
]

final_outputs(
    "results/report/run_overview.html",
    "results/report/samples.tsv",
    "results/report/software_versions.tsv",
    "results/report/config_used.tsv",
    "results/report/run_info.tsv",
    "results/plots/resolution_comparison.png",
    *expand("results/plots/mean_scores_{condition}.png", condition=sorted(REPORT_CONDITIONS)),
)


rule report_overview:
    input:
        sheet=config["samples"],
        qc="results/qc/qc_summary.tsv",
    output:
        html=report(
            "results/report/run_overview.html",
            caption="../report/run_overview.rst",
            category="0. Run overview",
            labels={"content": "run overview: versions, seeds, samples, software, config",
                    "format": "page"},
        ),
        samples=report(
            "results/report/samples.tsv",
            caption="../report/report_samples.rst",
            category="0. Run overview",
            labels={"content": "samples with cells before and after QC", "format": "TSV"},
        ),
        software=report(
            "results/report/software_versions.tsv",
            caption="../report/software_versions.rst",
            category="0. Run overview",
            labels={"content": "software versions", "format": "TSV"},
        ),
        config=report(
            "results/report/config_used.tsv",
            caption="../report/config_used.rst",
            category="0. Run overview",
            labels={"content": "configuration used", "format": "TSV"},
        ),
        info=report(
            "results/report/run_info.tsv",
            caption="../report/run_info.rst",
            category="0. Run overview",
            labels={"content": "workflow version and random seeds", "format": "TSV"},
        ),
    params:
        config=report_json(config),
        modules=REPORT_SOFTWARE_MODULES,
        workflow_dir=workflow.basedir,
    log:
        "logs/report/report_overview.log",
    benchmark:
        "benchmarks/report/report_overview.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1500),
        runtime=scaled_runtime(10, 0),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/report_overview.py"


rule report_resolutions:
    input:
        agreement="results/cluster/resolution_agreement.tsv",
    output:
        figure=report(
            "results/plots/resolution_comparison.png",
            caption="../report/resolution_comparison.rst",
            category="2. Clustering",
            subcategory="Resolution",
            labels={"figure": "clusters and agreement per resolution"},
        ),
    log:
        "logs/report/report_resolutions.log",
    benchmark:
        "benchmarks/report/report_resolutions.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000),
        runtime=scaled_runtime(5, 0),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/report_resolutions.py"


rule report_mean_score_heatmap:
    input:
        mean_scores="results/summary/mean_scores.tsv",
    output:
        figure=report(
            "results/plots/mean_scores_{condition}.png",
            caption="../report/mean_score_heatmap.rst",
            category="3. Gene-set scores",
            subcategory="Summary",
            labels=lambda wc: {"figure": "mean score per cell type and set",
                               "condition": report_label(REPORT_CONDITIONS[wc.condition])},
        ),
    wildcard_constraints:
        condition="|".join(map(re.escape, REPORT_CONDITIONS)) if REPORT_CONDITIONS else "$^",
    params:
        condition=lambda wc: report_json(REPORT_CONDITIONS[wc.condition]),
    log:
        "logs/report/report_mean_score_heatmap_{condition}.log",
    benchmark:
        "benchmarks/report/report_mean_score_heatmap_{condition}.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000, 3),
        runtime=scaled_runtime(5, 0),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/report_mean_score_heatmap.py"


# The report's first category: the findings in words with the overview heat map, and the
# interactive explorer; beside them the viewer-ready h5ad.
final_outputs(
    "results/findings.html",
    "results/findings.tsv",
    "results/plots/findings_overview.png",
    "results/report/explorer.html",
    "results/export/annotated_cellxgene.h5ad",
)


rule report_findings:
    input:
        # every registered replicate-test table (contrast_tables in the stages' .smk files)
        unpack(lambda wc: CONTRAST_TABLES if config["contrasts"] else {}),
    output:
        html=report(
            "results/findings.html",
            caption="../report/findings.rst",
            category="0. Findings",
            labels={"content": "findings in words, per contrast", "format": "page"},
        ),
        tsv=report(
            "results/findings.tsv",
            caption="../report/findings_table.rst",
            category="0. Findings",
            labels={"content": "every call with its numbers", "format": "TSV"},
        ),
        figure=report(
            "results/plots/findings_overview.png",
            caption="../report/findings_overview.rst",
            category="0. Findings",
            labels={"content": "effects per cell type and programme", "format": "figure"},
        ),
    params:
        fdr=config["contrast_settings"]["fdr"],
        report=report_json(config["report"]),
        seed=config["seed"],
        annotation=config["annotation"],
    log:
        "logs/report/report_findings.log",
    benchmark:
        "benchmarks/report/report_findings.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000, 6),
        runtime=scaled_runtime(5, 0.05),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/report_findings.py"


rule report_explorer:
    input:
        h5ad="results/annotate/annotated.h5ad",
        library="results/genesets/library.json",
    output:
        html=report(
            "results/report/explorer.html",
            caption="../report/explorer.rst",
            category="0. Findings",
            labels={"content": "interactive UMAP explorer", "format": "page"},
        ),
    params:
        report=report_json(config["report"]),
        seed=config["seed"],
        cluster_key=default_cluster_key(),
    log:
        "logs/report/report_explorer.log",
    benchmark:
        "benchmarks/report/report_explorer.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1500, 2 * H5AD_MB),
        runtime=scaled_runtime(10, 0.01 * H5AD_MB),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/report_explorer.py"


rule export_cellxgene:
    input:
        h5ad="results/annotate/annotated.h5ad",
        # raw counts for the counts layer (the annotated file keeps none)
        counts=expand("results/qc/{sample}.h5ad", sample=SAMPLES),
    output:
        h5ad="results/export/annotated_cellxgene.h5ad",
    params:
        report=report_json(config["report"]),
        seed=config["seed"],
        cluster_key=default_cluster_key(),
        target_sum=config["cluster"]["target_sum"],
        compression=config["h5ad_compression"],
    log:
        "logs/report/export_cellxgene.log",
    benchmark:
        "benchmarks/report/export_cellxgene.tsv"
    threads: 1
    resources:
        # the whole object and its counts in memory (input: about the two), X and counts
        # copied once more into CSC
        mem_mb=scaled_mem_mb(1500, 5 * H5AD_MB),
        runtime=scaled_runtime(10, 0.02 * H5AD_MB),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/export_cellxgene.py"
