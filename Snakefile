# mscflow: scRNA-seq of lung and liver after MSC infusion.
# QC -> clustering -> gene-set library and scoring -> annotation -> contrasts -> report.
from snakemake.utils import min_version

min_version("8.20")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/fetch.smk"
include: "workflow/rules/qc.smk"
include: "workflow/rules/cluster.smk"
include: "workflow/rules/genesets.smk"
include: "workflow/rules/scoring.smk"
include: "workflow/rules/annotate.smk"
include: "workflow/rules/labels.smk"
include: "workflow/rules/integration.smk"
include: "workflow/rules/summary.smk"
include: "workflow/rules/contrast.smk"
include: "workflow/rules/communication.smk"
include: "workflow/rules/trajectory.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        FINAL_OUTPUTS,
    default_target: True
