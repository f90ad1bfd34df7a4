# Sample sheet, config validation and input functions: the only Python logic of the rules.
import os
import re
from pathlib import Path

import pandas as pd
from snakemake.utils import validate

import mscflow.fetch
from mscflow.resources import scaled_mem_mb, scaled_runtime
from mscflow.fetch import apply_preset, fetched_path
from mscflow.workflow import (
    check_contrasts,
    check_gene_set_files,
    check_samples,
    read_sample_sheet,
    sample_metadata,
    validate_config,
    validate_sample_rows,
)

SCHEMAS = Path(workflow.basedir) / "workflow" / "schemas"

# A preset (config/presets/NAME) supplies a sample sheet and settings; the command line wins.
config.update(
    apply_preset(
        config,
        Path(workflow.basedir) / "config" / "presets",
        workflow.config_settings.overwrite_config,
    )
)
# Checked before any job runs; each error names the key, sheet line or sample and the fix
# (docs/errors.md lists them).
validate_config(config, SCHEMAS / "config.schema.yaml", source="config.yaml (with --config)")
validate(config, schema="../schemas/config.schema.yaml")  # fills schema defaults, if any

# Memory per MB of an h5ad input (the rules' scaled_mem_mb factors) was calibrated on gzip
# files; uncompressed ones (the default) hold the same data in ~4x the bytes (86k cells:
# 2.2 GB vs 0.57 GB), so their per-MB factor is a quarter.
H5AD_MB = 1.0 if config["h5ad_compression"] == "gzip" else 0.25

samples = read_sample_sheet(config["samples"])
validate_sample_rows(samples, SCHEMAS / "samples.schema.yaml", sheet_path=config["samples"])
check_samples(samples, config, sheet_path=config["samples"])
check_gene_set_files(config, samples["species"].iloc[0])
check_contrasts(config.get("contrasts"), samples)

SAMPLES = list(samples.index)
DEMO_DIR = os.path.normpath(config["demo"]["outdir"]) if "demo" in config else None


wildcard_constraints:
    sample="|".join(map(re.escape, SAMPLES)) if SAMPLES else "$^",


def is_demo_path(path):
    """True when the sample's path lies in the demo folder that rule make_demo writes."""
    return DEMO_DIR is not None and os.path.normpath(path).startswith(DEMO_DIR + os.sep)


def sample_input(wildcards):
    """The sample's input file or folder (for url rows: the fetched, unpacked copy)."""
    row = samples.loc[wildcards.sample]
    return fetched_path(row, config) if row["url"] else row["path"]


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
        *REPORT_OUTPUTS,
        *contrast_outputs(),
    ]


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


# Downloads (rules in fetch.smk): url rows of the sheet, their cache files.
FETCH_SETTINGS = mscflow.fetch.FetchSettings.from_config(config)
FETCH_SPECS = (
    mscflow.fetch.url_samples(mscflow.fetch.read_sheet(config["samples"])) if config.get("samples") else {}
)
FETCH_CACHE = mscflow.fetch.cache_index(FETCH_SPECS, FETCH_SETTINGS.cache_dir)
FETCH_CACHE_DIR = str(FETCH_SETTINGS.cache_dir).rstrip("/")


def fetch_spec(wildcards):
    """The validated url row of {sample}; a clear error for samples without a url."""
    try:
        return FETCH_SPECS[wildcards.sample]
    except KeyError:
        raise ValueError(
            f"sample '{wildcards.sample}' has no `url` row in {config.get('samples')}; "
            "only url rows are fetched (rows with `path` are read in place)."
        ) from None


def fetch_cached_file(wildcards):
    """Cache path of the file that holds {sample}."""
    return str(FETCH_CACHE[fetch_spec(wildcards).sha256])


# Contrasts (rules in contrast.smk).
CONTRAST_DIR = "results/contrasts"
CONTRAST_NAMES = [str(c["name"]) for c in config.get("contrasts") or []]
CONTRAST_SETTINGS = config.get("contrast_settings") or {}


def contrast_outputs():
    """Every output of the contrast rules (add to rule all); empty without contrasts."""
    if not CONTRAST_NAMES:
        return []
    tables = ["score_shifts", "composition", "pseudobulk_de", "gsea"]
    return (
        [f"{CONTRAST_DIR}/{t}.{ext}" for t in tables for ext in ("tsv", "parquet")]
        + [f"{CONTRAST_DIR}/summary.tsv",
           f"{CONTRAST_DIR}/plots/score_shifts_forest.png",
           f"{CONTRAST_DIR}/plots/composition_bars.png"]
        + expand(f"{CONTRAST_DIR}/plots/volcano_{{contrast}}.png", contrast=CONTRAST_NAMES)
        + expand(f"{CONTRAST_DIR}/plots/gsea_{{contrast}}.png", contrast=CONTRAST_NAMES)
    )
