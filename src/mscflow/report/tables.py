"""The registered replicate-test tables, read by their columns, and what they could have
detected.

A table of :func:`mscflow.contrast.replicate_tests` (``contrast, tissue, condition,
reference, <unit columns>, metric, ... effect, ci_low, ci_high, ... padj, significant,
status, note``) is recognised by those columns; its unit columns are those between
``reference`` and ``metric`` (less the family columns, e.g. ``fdr_family``). Composition
(no ``metric``, an ``effect_scale``) reads the same way with one metric per row; pseudobulk
DE and GSEA are recognised by their own columns; anything else is ``unknown``.

:func:`minimum_detectable_effect`: the smallest |effect| a two-sided t test detects with a
given power; :func:`standard_error_from_ci` recovers a row's standard error from its t-based
95 % CI and residual degrees of freedom.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "CI_LEVEL",
    "FAMILY_COLUMNS",
    "METRIC_LABELS",
    "REPLICATE_COLUMNS",
    "ResultTable",
    "minimum_detectable_effect",
    "read_result_tables",
    "result_table",
    "row_mde",
    "standard_error_from_ci",
]

# Columns every table of contrast.replicate_tests holds (unit columns sit between
# ``reference`` and ``metric``).
REPLICATE_COLUMNS = ("contrast", "tissue", "condition", "reference", "metric",
                     "n_samples_condition", "n_samples_reference", "effect", "ci_low",
                     "ci_high", "pvalue", "padj", "significant", "status", "note")
CI_LEVEL = 0.95
# How pages and figures name known metrics; anything else is named by its key.
METRIC_LABELS = {
    "mean": "mean score",
    "frac_above": "fraction of cells above the score threshold",
    "log2_abundance_ratio": "log2 abundance ratio",
    "log2_odds_ratio": "log2 odds ratio of the share",
    "clr_log2_difference": "centred log2-ratio difference",
}

# Columns that split a table's Benjamini-Hochberg families beyond (contrast, metric), e.g.
# communication's focus axes vs the exploratory rest; they are not part of the unit.
FAMILY_COLUMNS = ("fdr_family",)

# ----------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class ResultTable:
    """One registered table: its rows (positions as in the file), its kind, its unit
    columns and the column holding the metric name."""

    analysis: str
    table: pd.DataFrame
    kind: str  # replicate | de | gsea | unknown
    units: tuple[str, ...] = ()
    metric_column: str = "metric"

    @property
    def family(self) -> list[str]:
        """Columns of a Benjamini-Hochberg family within a contrast (as the stage formed
        them: the metric, and e.g. ``fdr_family`` where the table has one)."""
        return [self.metric_column, *(c for c in FAMILY_COLUMNS if c in self.table)]


def result_table(analysis: str, table: pd.DataFrame) -> ResultTable:
    """Classify a registered table by its columns (see the module docstring)."""
    table = table.reset_index(drop=True)
    cols = list(table.columns)
    base = set(REPLICATE_COLUMNS) - {"metric"}
    if base <= set(cols) and "metric" in cols:
        units = [c for c in cols[cols.index("reference") + 1: cols.index("metric")]
                 if c not in FAMILY_COLUMNS]
        return ResultTable(analysis, table, "replicate", tuple(units))
    if base <= set(cols) and "effect_scale" in cols:
        units = cols[cols.index("reference") + 1: cols.index("n_samples_condition")]
        return ResultTable(analysis, table, "replicate", tuple(units), "effect_scale")
    if {"contrast", "cell_type", "gene", "log2FoldChange", "padj", "status"} <= set(cols):
        return ResultTable(analysis, table, "de", ("cell_type", "gene"))
    if {"contrast", "cell_type", "gene_set", "nes", "fdr", "significant"} <= set(cols):
        return ResultTable(analysis, table, "gsea", ("cell_type", "gene_set"))
    return ResultTable(analysis, table, "unknown")


def read_result_tables(paths: Mapping[str, str]) -> list[ResultTable]:
    """Read the registry's parquet files (``{analysis: path}``) in registry order."""
    return [result_table(name, pd.read_parquet(path)) for name, path in paths.items()]


# ------------------------------------------------------------------- detectable effect


def standard_error_from_ci(ci_low: float, ci_high: float, df: float) -> float:
    """Standard error behind a t-based 95 % CI (NaN when the CI or df is missing)."""
    from scipy import stats

    if not (np.isfinite(ci_low) and np.isfinite(ci_high) and np.isfinite(df) and df >= 1):
        return float("nan")
    return float((ci_high - ci_low) / (2 * stats.t.isf((1 - CI_LEVEL) / 2, df)))


def minimum_detectable_effect(se: float, df: float, alpha: float, power: float = 0.8
                              ) -> float:
    """Smallest |effect| a two-sided t test (``df``, standard error ``se``) at level
    ``alpha`` detects with probability ``power`` (noncentral t; NaN when undefined)."""
    from scipy import optimize, stats

    if not (np.isfinite(se) and se > 0 and np.isfinite(df) and df >= 1 and 0 < alpha < 1):
        return float("nan")
    crit = stats.t.isf(alpha / 2, df)

    def shortfall(nc: float) -> float:
        # the lower tail is negligible for nc > 0; scipy returns NaN for it at large nc
        lower = float(stats.nct.cdf(-crit, df, nc))
        return float(stats.nct.sf(crit, df, nc)) + (lower if np.isfinite(lower) else 0.0) - power

    upper = crit + 10.0
    while shortfall(upper) < 0:
        upper *= 2
    return float(optimize.brentq(shortfall, 0.0, upper, xtol=1e-10) * se)


def row_mde(row: pd.Series, alpha: float, power: float) -> float:
    se = standard_error_from_ci(row["ci_low"], row["ci_high"], row.get("df", np.nan))
    return minimum_detectable_effect(se, row.get("df", np.nan), alpha, power)
