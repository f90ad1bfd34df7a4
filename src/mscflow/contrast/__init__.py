"""Replicate-aware condition contrasts: score shifts, composition, pseudobulk DE and GSEA.

Every test treats the *sample* (biological replicate) as the unit of replication; cells
are only aggregated (per-sample means, fractions, counts or summed raw counts).

Where things live:

============== =========================================================================
settings       ``Contrast``, ``ContrastSettings`` (+ ``GseaSettings``,
               ``PseudobulkSettings``) and ``parse_contrasts``, the one contrast validator
design         sample metadata, design matrices, ``contrast_designs`` (the per-contrast
               loop every analysis shares) and the per-unit cell filter (``UnitSamples``)
stats          ``test_shift`` (OLS / Welch / Mann-Whitney), the quasi GLM, BH FDR
scores         ``replicate_tests`` (any long table of per-sample values) and
               ``score_shifts`` built on it
composition    cell-type abundance tests
pseudobulk     pydeseq2 on summed raw counts
gsea           gseapy prerank on the run's scored programme sets, running enrichment
summary        tested / skipped / no_test counts per analysis and contrast
stages         what each rule does: read inputs once, run, return ``{output: table}``
============== =========================================================================

Design choices, documented here because they change what can be detected:

* Score shifts default to an ordinary least-squares linear model on per-sample values
  (``value ~ 1 + condition [+ covariates]``, 95% CI from the model). Without covariates
  this is the pooled-variance two-sample t-test. A Mann-Whitney rank test is offered
  (``score_test: mannwhitney``) but with 3 vs 3 samples its smallest attainable
  two-sided p-value is 0.1, so no effect could ever be called at FDR 0.05; its CI (Moses /
  Hodges-Lehmann) is reported as NaN when the design cannot attain 95% coverage.
* Composition defaults to a quasi-Poisson GLM with a median-of-ratios offset across cell
  types (see :mod:`mscflow.contrast.composition`).
* Pseudobulk DE uses pydeseq2 on summed raw counts per sample; GSEA is gseapy prerank
  on the Wald statistic with the run's gene-set library only.
* Rows are never dropped silently: every (contrast, cell type[, gene set]) yields a row
  whose ``status`` is ``tested``, ``skipped`` (too few cells/samples, reason in ``note``)
  or ``no_test`` (design without replicates or residual degrees of freedom; p = NaN).
* Benjamini-Hochberg FDR is applied per family: score shifts per (contrast, metric) over
  cell types x gene sets, composition per contrast over cell types, pseudobulk DE per
  (contrast, cell type) over genes (pydeseq2's own), GSEA per contrast over cell types x
  gene sets on the permutation p-values (gseapy's own GSEA FDR is kept as ``fdr_gsea``).

Importing the package is light (no scipy, statsmodels, anndata or gseapy): ``common.smk``
validates the contrasts with :func:`parse_contrasts` before any job runs.
"""

from mscflow.contrast.composition import composition_counts, composition_tests
from mscflow.contrast.design import (
    ContrastDesign,
    UnitSamples,
    contrast_design,
    contrast_designs,
    design_matrix,
    design_problem,
    permute_conditions,
    sample_metadata,
)
from mscflow.contrast.gsea import (
    gsea_prerank,
    gsea_sets_for_plot,
    ranking_from_de,
    running_enrichment,
)
from mscflow.contrast.pseudobulk import (
    pseudobulk_counts,
    pseudobulk_counts_from_files,
    pseudobulk_de,
)
from mscflow.contrast.scores import (
    per_sample_scores,
    replicate_tests,
    score_columns,
    score_shifts,
    select_score_columns,
)
from mscflow.contrast.settings import (
    COMPOSITION_TESTS,
    SCORE_TESTS,
    Contrast,
    ContrastSettings,
    GseaSettings,
    PseudobulkSettings,
    parse_contrasts,
)
from mscflow.contrast.stages import (
    TSV_OPTIONS,
    composition_stage,
    gsea_stage,
    load_inputs,
    pseudobulk_stage,
    score_shifts_stage,
    summary_stage,
    write_tables,
)
from mscflow.contrast.stats import (
    STATUS_NO_TEST,
    STATUS_SKIPPED,
    STATUS_TESTED,
    bh_adjust,
    test_shift,
)
from mscflow.contrast.summary import contrast_summary

__all__ = [
    "COMPOSITION_TESTS",
    "SCORE_TESTS",
    "STATUS_NO_TEST",
    "STATUS_SKIPPED",
    "STATUS_TESTED",
    "TSV_OPTIONS",
    "Contrast",
    "ContrastDesign",
    "ContrastSettings",
    "GseaSettings",
    "PseudobulkSettings",
    "UnitSamples",
    "bh_adjust",
    "composition_counts",
    "composition_stage",
    "composition_tests",
    "contrast_design",
    "contrast_designs",
    "contrast_summary",
    "design_matrix",
    "design_problem",
    "gsea_prerank",
    "gsea_sets_for_plot",
    "gsea_stage",
    "load_inputs",
    "parse_contrasts",
    "per_sample_scores",
    "permute_conditions",
    "pseudobulk_counts",
    "pseudobulk_counts_from_files",
    "pseudobulk_de",
    "pseudobulk_stage",
    "ranking_from_de",
    "replicate_tests",
    "running_enrichment",
    "sample_metadata",
    "score_columns",
    "score_shifts",
    "score_shifts_stage",
    "select_score_columns",
    "summary_stage",
    "test_shift",
    "write_tables",
]
