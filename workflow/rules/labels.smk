# The authors' labels: obs columns of published files carried with keep_obs (as
# published_<column>) whose names say they hold cell labels, compared with mscflow's
# cell_type. No such column in the sheet: nothing to do.

from mscflow.annotate.labels import author_label_columns, available_sources
from mscflow.report.overview import file_safe_name

# File-name-safe name -> carried obs column, from the sample sheet's keep_obs.
AUTHOR_LABELS = {file_safe_name(c): c for c in author_label_columns(samples["keep_obs"])}
if len(AUTHOR_LABELS) != len(set(AUTHOR_LABELS.values())):
    raise WorkflowError(
        f"keep_obs label columns {sorted(AUTHOR_LABELS.values())} clash once made file-name "
        "safe; list columns that differ in letters or digits."
    )

# Label sources besides the markers (published: annotation.published_column is set;
# reference: it is the source), each cross-checked against the marker labels.
OTHER_SOURCES = available_sources(config["annotation"]["source"],
                                  config["annotation"]["published_column"])

final_outputs(
    *expand("results/labels/{label}_vs_cell_type.tsv", label=sorted(AUTHOR_LABELS)),
    *expand("results/plots/labels_{label}_vs_cell_type.png", label=sorted(AUTHOR_LABELS)),
    *expand("results/labels/markers_vs_{source}_{part}.tsv", source=OTHER_SOURCES,
            part=["agreement", "clusters"]),
    *expand("results/plots/labels_markers_vs_{source}.png", source=OTHER_SOURCES),
)


rule compare_labels:
    input:
        h5ad="results/annotate/annotated.h5ad",
    output:
        table=report(
            "results/labels/{label}_vs_cell_type.tsv",
            caption="../report/labels_table.rst",
            category="4. Annotation",
            subcategory="Published labels",
            labels=lambda wc: {"table": "published label x mscflow label",
                               "column": report_label(AUTHOR_LABELS[wc.label])},
        ),
        figure=report(
            "results/plots/labels_{label}_vs_cell_type.png",
            caption="../report/labels_heatmap.rst",
            category="4. Annotation",
            subcategory="Published labels",
            labels=lambda wc: {"figure": "published label x mscflow label",
                               "column": report_label(AUTHOR_LABELS[wc.label])},
        ),
    wildcard_constraints:
        label="|".join(map(re.escape, AUTHOR_LABELS)) if AUTHOR_LABELS else "$^",
    params:
        column=lambda wc: report_json(AUTHOR_LABELS[wc.label]),
    log:
        "logs/labels/compare_labels_{label}.log",
    benchmark:
        "benchmarks/labels/compare_labels_{label}.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000, 0),
        runtime=scaled_runtime(5, 0),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/compare_labels.py"


rule crosscheck_sources:
    input:
        h5ad="results/annotate/annotated.h5ad",
    output:
        agreement=report(
            "results/labels/markers_vs_{source}_agreement.tsv",
            caption="../report/labels_crosscheck.rst",
            category="4. Annotation",
            subcategory="Cross-check of label sources",
            labels=lambda wc: {"table": f"agreement per label: markers vs {wc.source}"},
        ),
        clusters=report(
            "results/labels/markers_vs_{source}_clusters.tsv",
            caption="../report/labels_crosscheck_clusters.rst",
            category="4. Annotation",
            subcategory="Cross-check of label sources",
            labels=lambda wc: {"table": f"clusters: markers vs {wc.source}"},
        ),
        figure=report(
            "results/plots/labels_markers_vs_{source}.png",
            caption="../report/labels_crosscheck_heatmap.rst",
            category="4. Annotation",
            subcategory="Cross-check of label sources",
            labels=lambda wc: {"figure": f"markers vs {wc.source}"},
        ),
    wildcard_constraints:
        source="published|reference",
    params:
        cluster_key=default_cluster_key(),
    log:
        "logs/labels/crosscheck_{source}.log",
    benchmark:
        "benchmarks/labels/crosscheck_{source}.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000, 0),
        runtime=scaled_runtime(5, 0),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/crosscheck_sources.py"
