# Sample sheet, config validation and input functions: the only Python logic of the rules.
import os
import re
from pathlib import Path

import pandas as pd
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from mscflow.workflow import check_samples, read_sample_sheet, sample_metadata

validate(config, schema="../schemas/config.schema.yaml")

samples = read_sample_sheet(config["samples"])
for _number, (_sample, _row) in enumerate(samples.iterrows(), start=2):
    try:
        validate(_row.to_dict(), schema="../schemas/samples.schema.yaml")
    except WorkflowError as _err:
        raise WorkflowError(
            f"sample sheet '{config['samples']}', line {_number} (sample '{_sample}') is "
            f"invalid: {_err}. Columns and allowed values: config/README.md."
        ) from None
check_samples(samples, config, sheet_path=config["samples"])

SAMPLES = list(samples.index)
DEMO_DIR = os.path.normpath(config["demo"]["outdir"]) if "demo" in config else None


wildcard_constraints:
    sample="|".join(map(re.escape, SAMPLES)) if SAMPLES else "$^",


def is_demo_path(path):
    """True when the sample's path lies in the demo folder that rule make_demo writes."""
    return DEMO_DIR is not None and os.path.normpath(path).startswith(DEMO_DIR + os.sep)


def sample_input(wildcards):
    """The sample's input file or folder."""
    return samples.loc[wildcards.sample, "path"]


def demo_outputs():
    """Demo inputs (folders for 10x mtx, files otherwise) that make_demo must write."""
    rows = samples[samples["path"].map(is_demo_path)]
    return {
        "mtx": [p for p, f in zip(rows["path"], rows["format"]) if f == "10x_mtx"],
        "files": [p for p, f in zip(rows["path"], rows["format"]) if f != "10x_mtx"],
    }


def species_of_run():
    """The one species of the run (the sample sheet may not mix species)."""
    return samples["species"].iloc[0]


def all_outputs():
    """Every final output of the run (rule all)."""
    return [
        "results/qc/qc_summary.tsv",
        "results/qc/plots/qc_distributions.png",
        "results/qc/plots/doublet_scores.png",
        "results/cluster/markers.tsv",
        "results/cluster/resolution_agreement.tsv",
        "results/scores/scores.parquet",
        "results/scores/gene_set_report.tsv",
        "results/annotate/clusters.tsv",
        "results/summary/cluster_sizes.tsv",
        "results/summary/mean_scores.tsv",
        "results/plots/umap_overview.png",
        "results/plots/umap_scores.png",
        "results/plots/score_violins.png",
        "results/plots/marker_dotplot.png",
        "results/plots/annotation_dotplot.png",
    ]


def mem_mb_for(base_mb, per_input_mb=0.0):
    """Memory request: base plus a multiple of the input size, scaled by attempt."""

    def _mem(wildcards, input, attempt):
        size_mb = sum(
            sum(f.stat().st_size for f in Path(p).rglob("*")) if Path(p).is_dir() else
            (Path(p).stat().st_size if Path(p).exists() else 0)
            for p in input
        ) / 1e6
        return int((base_mb + per_input_mb * size_mb) * attempt)

    return _mem


def programme_gmts():
    """Programme GMT of the run's species plus the user's extra GMT files."""
    gmts = [config["genesets"]["programmes"][species_of_run()]]
    return gmts + [e["path"] for e in config["genesets"].get("extra", [])]


def programme_gmt_species():
    """Species of each file of programme_gmts(), in the same order."""
    extra = [e["species"] for e in config["genesets"].get("extra", [])]
    return [species_of_run(), *extra]


def default_cluster_key():
    """obs column of the Leiden clustering at the default resolution."""
    return f"leiden_{float(config['cluster']['default_resolution']):g}"


# Gene sets drawn on UMAP and as violins in the report (when present in the scores).
REPORT_SCORE_SETS = [
    "pan_macrophage",
    "efferocytosis_combined",
    "il10_stat3_response",
    "il10_ligand_receptor",
    "momf",
    "anti_inflammatory_m2like",
]
