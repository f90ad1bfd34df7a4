"""What each contrast rule does, from its input files to its tables.

Every ``workflow/scripts/contrast_*.py`` calls one function here with the rule's inputs and
params (the validated ``contrasts`` list and ``contrast_settings`` section) and writes the
returned tables with :func:`write_tables`. A stage returns ``{output name: table}``, the
names being the rule's outputs (``tsv`` and ``parquet`` hold the same table).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mscflow import job
from mscflow.contrast.composition import composition_counts, composition_tests
from mscflow.contrast.gsea import gsea_prerank
from mscflow.contrast.pseudobulk import pseudobulk_counts_from_files, pseudobulk_de
from mscflow.contrast.scores import per_sample_scores, score_shifts, select_score_columns
from mscflow.contrast.settings import Contrast, ContrastSettings, parse_contrasts
from mscflow.contrast.stats import STATUS_TESTED
from mscflow.contrast.summary import contrast_summary
from mscflow.genesets import read_library
from mscflow.inputs.samplesheet import read_sample_sheet

__all__ = [
    "TSV_OPTIONS",
    "StageInputs",
    "composition_stage",
    "gsea_stage",
    "load_inputs",
    "pseudobulk_stage",
    "score_shifts_stage",
    "summary_stage",
    "write_tables",
]

log = logging.getLogger(__name__)

# How every contrast TSV is written (missing values as NA, 6 significant digits).
TSV_OPTIONS: dict[str, Any] = {"na_rep": "NA", "float_format": "%.6g"}

Tables = dict[str, pd.DataFrame]
PathLike = str | Path


def write_tables(tables: Mapping[str, pd.DataFrame], outputs: Any) -> None:
    """Write each table to ``outputs[name]`` (a mapping or Snakemake's ``output``) through
    a temporary file: ``.parquet`` as parquet, anything else as TSV with
    :data:`TSV_OPTIONS`. No index is written."""
    from mscflow.io import (
        write_table_atomic,  # parse-time check imports this module: no anndata until used
    )

    for name, table in tables.items():
        path = str(outputs[name])
        options = {} if path.endswith(".parquet") else TSV_OPTIONS
        write_table_atomic(table, path, **options)


@dataclass(frozen=True)
class StageInputs:
    """What the contrast analyses share: the sheet, the parsed contrasts and settings and
    the cells' obs."""

    samples: pd.DataFrame
    contrasts: list[Contrast]
    settings: ContrastSettings
    obs: pd.DataFrame


def load_inputs(h5ad: PathLike, sample_sheet: PathLike, contrasts: Sequence[Mapping],
                settings: Mapping) -> StageInputs:
    """Read the sample sheet, check the contrasts against it, build the settings and read
    the annotated cells' ``obs`` (backed: the matrix stays on disk)."""
    import anndata as ad

    samples = read_sample_sheet(sample_sheet)
    parsed = parse_contrasts(contrasts, samples)
    config = ContrastSettings.from_config(settings)
    backed = ad.read_h5ad(h5ad, backed="r")
    obs = backed.obs.copy()
    backed.file.close()
    return StageInputs(samples, parsed, config, obs)


def score_shifts_stage(h5ad: PathLike, sample_sheet: PathLike, contrasts: Sequence[Mapping],
                       settings: Mapping) -> Tables:
    """Rule contrast_score_shifts: per-sample score summaries and their tests
    (outputs ``tsv``, ``parquet``, ``per_sample``)."""
    run = load_inputs(h5ad, sample_sheet, contrasts, settings)
    st = run.settings
    cols = select_score_columns(run.obs, st)
    with job.timed("score_shifts"):
        per_sample = per_sample_scores(run.obs, cols, st.score_threshold, st.score_prefix)
        table = score_shifts(run.obs, run.contrasts, st, run.samples, per_sample=per_sample)
    for status, n in table["status"].value_counts().items():
        log.info("score shifts: %d rows %s", n, status)
    log.info("score shifts: %d significant at FDR %s", int(table["significant"].sum()), st.fdr)
    return {"tsv": table, "parquet": table, "per_sample": per_sample}


def composition_stage(h5ad: PathLike, sample_sheet: PathLike, contrasts: Sequence[Mapping],
                      settings: Mapping) -> Tables:
    """Rule contrast_composition: cell-type counts per sample and their tests
    (outputs ``tsv``, ``parquet``, ``proportions``)."""
    run = load_inputs(h5ad, sample_sheet, contrasts, settings)
    st = run.settings
    with job.timed("composition"):
        counts = composition_counts(run.obs)
        table = composition_tests(run.obs, run.contrasts, st, run.samples, counts=counts)
    log.info("composition (%s): %d tests, %d significant at FDR %s", st.composition_test,
             int((table["status"] == STATUS_TESTED).sum()), int(table["significant"].sum()),
             st.fdr)
    return {"tsv": table, "parquet": table, "proportions": counts}


def pseudobulk_stage(h5ad: PathLike, sample_sheet: PathLike, contrasts: Sequence[Mapping],
                     settings: Mapping, *, counts: Sequence[PathLike], threads: int = 1
                     ) -> Tables:
    """Rule contrast_pseudobulk_de: pydeseq2 per contrast x cell type (outputs ``tsv``,
    ``parquet``) on raw counts summed from the per-sample QC files ``counts`` (one sample in
    memory at a time; the annotated file gives the cells, their labels and the genes)."""
    import anndata as ad

    run = load_inputs(h5ad, sample_sheet, contrasts, settings)
    backed = ad.read_h5ad(h5ad, backed="r")
    genes = backed.var_names.copy()
    backed.file.close()
    with job.timed("pseudobulk counts (per sample)"):
        summed = pseudobulk_counts_from_files(run.obs, genes, counts)
    with job.timed("pseudobulk_de"):
        table = pseudobulk_de(ad.AnnData(obs=run.obs), run.contrasts, run.settings,
                              run.samples, n_cpus=threads, summed=summed)
    units = table.drop_duplicates(["contrast", "cell_type"])
    for (name, status), n in units.groupby(["contrast", "status"]).size().items():
        log.info("%s: %d cell types %s", name, n, status)
    log.info("%d gene x cell type calls at FDR %s", int(table["significant"].sum()),
             run.settings.fdr)
    return {"tsv": table, "parquet": table}


def gsea_stage(de: PathLike, library: PathLike, settings: Mapping, *, threads: int = 1
               ) -> Tables:
    """Rule contrast_gsea: prerank of the DE statistics on the run's scored programme
    sets from the gene-set library (outputs ``tsv``, ``parquet``)."""

    st = ContrastSettings.from_config(settings)
    sets = read_library(library).programme_lists()
    log.info("GSEA library: %d sets", len(sets))
    with job.timed("gsea"):
        table = gsea_prerank(pd.read_parquet(de), sets, st, threads=threads)
    log.info("GSEA: %d tested, %d significant at FDR %s",
             int((table["status"] == STATUS_TESTED).sum()), int(table["significant"].sum()),
             st.fdr)
    return {"tsv": table, "parquet": table}


def summary_stage(tables: Mapping[str, PathLike]) -> Tables:
    """Rule contrast_summary: ``{analysis: parquet path}`` -> counts per analysis and
    contrast (output ``tsv``); warns about designs that allow no test."""
    summary = contrast_summary({name: pd.read_parquet(path) for name, path in tables.items()})
    for row in summary.itertuples():
        if row.n_no_test:
            log.warning("%s / %s: no test possible for %d unit(s): %s", row.analysis,
                        row.contrast, row.n_no_test, row.reasons_not_tested)
    return {"tsv": summary}
