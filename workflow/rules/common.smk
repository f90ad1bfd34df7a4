# The run (validated config with its schema defaults, the sample sheet) and the input
# functions: the only place that reads the sheet, and the only Python logic of the rules.
import os
import re
from pathlib import Path

import mscflow.inputs.fetch
from mscflow.run import prepare_run
from mscflow.inputs.readers import selected_share
from mscflow.inputs.tenx import mtx_folder_files
from mscflow.resources import (
    inputs_share,
    largest_input_share,
    sample_share,
    scaled_mem_mb,
    scaled_runtime,
)
from mscflow.inputs.samplesheet import sample_metadata
from mscflow.report.markup import report_json, report_label

# Checked before any job runs: preset, config (every default filled in from the schema),
# sample sheet, gene-set files and contrasts. Each error names the key, sheet line or sample
# and the fix (docs/errors.md lists them). A preset (config/presets of the working directory,
# else beside the Snakefile) is resolved here: its sheet is written to results/preset/NAME/
# and printed before any job runs (docs/fetching.md).
RUN = prepare_run(
    config,
    presets_dir=[Path("config/presets"), Path(workflow.basedir) / "config" / "presets"],
    cli_overrides=workflow.config_settings.overwrite_config,
)
config.update(RUN.config)

samples = RUN.samples
SAMPLES = RUN.sample_ids
SPECIES = RUN.species
DEMO_DIR = os.path.normpath(config["demo"]["outdir"])

# Memory per MB of an h5ad input (the rules' scaled_mem_mb factors) was calibrated on gzip
# files; uncompressed ones (the default) hold the same data in ~4x the bytes (86k cells:
# 2.2 GB vs 0.57 GB), so their per-MB factor is a quarter.
H5AD_MB = 1.0 if config["h5ad_compression"] == "gzip" else 0.25


wildcard_constraints:
    sample="|".join(map(re.escape, SAMPLES)) if SAMPLES else "$^",


def is_demo_path(path):
    """True when the sample's path lies in the demo folder that rule make_demo writes."""
    return os.path.normpath(path).startswith(DEMO_DIR + os.sep)


def sample_input(wildcards):
    """The sample's input file or folder (for url rows: the fetched, unpacked copy)."""
    row = samples.loc[wildcards.sample]
    return mscflow.inputs.fetch.fetched_path(FETCH_SPECS[row["sample"]]) if row["url"] else row["path"]


def sample_input_files(wildcards):
    """The files inside a 10x folder row (matrix, barcodes, features): tracked one by one, so
    replacing a file inside the folder reruns the sample (a folder's own time stamp does not
    change when a file in it is rewritten). Folders the workflow writes (demo, fetched
    archives) are tracked by the rule that writes them."""
    row = samples.loc[wildcards.sample]
    if row["format"] != "10x_mtx" or row["url"] or is_demo_path(row["path"]):
        return []
    return [str(p) for p in mtx_folder_files(row["path"])]


def sample_input_share(wildcards, input):
    """Share of the sample's input file its cells are (one donor of a many-donor h5ad via
    obs_filter; 1 otherwise): the QC job's resource requests follow the sample."""
    row = samples.loc[wildcards.sample]
    return selected_share(input[0], row["format"], row["obs_filter"])


def demo_outputs():
    """Demo inputs (folders for 10x mtx, files otherwise) that make_demo must write."""
    rows = samples[samples["path"].map(is_demo_path)]
    return {
        "mtx": [p for p, f in zip(rows["path"], rows["format"]) if f == "10x_mtx"],
        "files": [p for p, f in zip(rows["path"], rows["format"]) if f != "10x_mtx"],
    }


# Final outputs of the run, asked for by the target rule "all"; each stage's .smk adds its
# own with final_outputs().
FINAL_OUTPUTS = []


def final_outputs(*paths):
    """Register final outputs of a stage (the target rule "all" asks for them)."""
    FINAL_OUTPUTS.extend(paths)


# Tables of replicate-aware tests that rule contrast_summary summarises (analysis name ->
# parquet); each stage with condition tests adds its own with contrast_tables().
CONTRAST_TABLES = {}


def contrast_tables(**tables):
    """Register tables (analysis name -> parquet path) for the contrast summary."""
    CONTRAST_TABLES.update(tables)


def gene_set_files():
    """Every GMT, synonym and ortholog file the run's gene-set library is built from."""
    gs = config["genesets"]
    return [
        gs["programmes"][SPECIES],
        *(e["path"] for e in gs["extra"]),
        gs["markers"][SPECIES],
        gs["synonyms"],
        gs["orthologs"],
    ]


def default_cluster_key():
    """obs column of the Leiden clustering at the default resolution."""
    return f"leiden_{float(config['cluster']['default_resolution']):g}"


# Downloads (rules in fetch.smk): url rows of the sheet, their cache files. Rows of a preset
# carry no sha256: their files are verified against the preset's lock (pinned on first
# download), and their cache keys are url-<digest>.
FETCH_SETTINGS = mscflow.inputs.fetch.FetchSettings.from_config(config["fetch"])
FETCH_LOCK = str(RUN.preset.lock.path) if RUN.preset else ""
FETCH_SPECS = mscflow.inputs.fetch.url_samples(samples, pinned_by_lock=bool(RUN.preset))
FETCH_CACHE = mscflow.inputs.fetch.cache_index(FETCH_SPECS, FETCH_SETTINGS.cache_dir)
FETCH_CACHE_DIR = str(FETCH_SETTINGS.cache_dir).rstrip("/")


def fetch_spec(wildcards):
    """The validated url row of {sample}; a clear error for samples without a url."""
    try:
        return FETCH_SPECS[wildcards.sample]
    except KeyError:
        raise ValueError(
            f"sample '{wildcards.sample}' has no `url` row in {config['samples']}; "
            "only url rows are fetched (rows with `path` are read in place)."
        ) from None


def fetch_cached_files(wildcards):
    """Cache paths of the file(s) that hold {sample}."""
    return [str(FETCH_CACHE[f.key]) for f in fetch_spec(wildcards).files]


# Annotation sources (annotate.smk, labels.smk): annotation.source chooses cell_type.
ANNOTATION = config["annotation"]  # checked by prepare_run (mscflow.run)
ANNOTATION_SOURCE = ANNOTATION["source"]

def reference_model_file():
    """The celltypist model of source reference: the user's file, or the trained one."""
    return ANNOTATION["reference_model"] or "results/annotate/reference_model.pkl"


def annotation_source_inputs(wildcards):
    """Inputs of the annotate rule for the label sources besides the markers."""
    out = {}
    if ANNOTATION["published_column"] or ANNOTATION_SOURCE == "reference":
        # the names table maps the published labels, and those of a reference model
        out["published_names"] = ANNOTATION["published_names"]
    if ANNOTATION_SOURCE == "reference":
        out["reference"] = "results/annotate/reference_predictions.parquet"
    return out
