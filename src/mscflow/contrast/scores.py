"""Score shifts: per-sample summaries of gene-set scores tested between conditions.

:func:`replicate_tests` is the generic part: it tests any long table of per-sample values
(one row per sample and unit) for every contrast, with the sample as the replicate.
:func:`score_shifts` is that function on the per-sample gene-set scores (units cell type x
gene set, metrics ``mean`` and ``frac_above``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from mscflow.contrast.design import EXCLUDED_NOTE, ContrastDesign, UnitSamples, contrast_designs
from mscflow.contrast.settings import Contrast, ContrastSettings
from mscflow.contrast.stats import (
    STATUS_NO_TEST,
    STATUS_SKIPPED,
    STATUS_TESTED,
    add_fdr,
    test_shift,
)
from mscflow.errors import ConfigError, InputDataError

__all__ = [
    "per_sample_scores",
    "replicate_tests",
    "score_columns",
    "score_shifts",
    "select_score_columns",
]

_EMPTY = {"effect": np.nan, "ci_low": np.nan, "ci_high": np.nan, "statistic": np.nan,
          "df": np.nan, "pvalue": np.nan}


def score_columns(obs: pd.DataFrame, prefix: str = "score_") -> list[str]:
    """Names of gene-set score columns in ``obs`` (sorted)."""
    return sorted(c for c in obs.columns if str(c).startswith(prefix))


def select_score_columns(obs: pd.DataFrame, settings: ContrastSettings) -> list[str]:
    """The score columns to test: ``score_sets`` (each must be in ``obs``), else every
    column starting with ``score_prefix``."""
    prefix = settings.score_prefix
    cols = score_columns(obs, prefix)
    if settings.score_sets:
        wanted = [f"{prefix}{x}" for x in settings.score_sets]
        missing = [w for w in wanted if w not in cols]
        if missing:
            raise ConfigError(
                f"contrast_settings.score_sets: columns {missing} not in obs "
                f"(available: {cols}); fix the set names"
            )
        cols = wanted
    if not cols:
        raise ConfigError(
            f"obs has no gene-set score columns starting with {prefix!r}; "
            "run the scoring step first or set contrast_settings.score_prefix"
        )
    return cols


def per_sample_scores(
    obs: pd.DataFrame, columns: Sequence[str], threshold: float = 0.0, prefix: str = "score_"
) -> pd.DataFrame:
    """Per tissue x cell type x sample x gene set: ``n_cells``, ``mean``, ``frac_above``.

    ``frac_above`` is the fraction of cells with score > ``threshold``.
    """
    need = ["tissue", "cell_type", "sample", *columns]
    absent = [c for c in need if c not in obs.columns]
    if absent:
        raise InputDataError(f"obs lacks column(s) {absent} needed for score shifts")
    df = obs[need].copy()
    for c in ("tissue", "cell_type", "sample"):
        df[c] = df[c].astype(str)
    long = df.melt(id_vars=["tissue", "cell_type", "sample"], var_name="column", value_name="v")
    long["above"] = (long["v"] > threshold).astype(float)
    grp = long.groupby(["tissue", "cell_type", "sample", "column"], sort=True)
    out = grp.agg(n_cells=("v", "size"), mean=("v", "mean"), frac_above=("above", "mean"))
    out = out.reset_index()
    out["gene_set"] = out["column"].str.slice(len(prefix))
    return out[["tissue", "cell_type", "sample", "gene_set", "n_cells", "mean", "frac_above"]]


def replicate_tests(
    values: pd.DataFrame,
    designs: Iterable[ContrastDesign],
    settings: ContrastSettings,
    *,
    units: Sequence[str],
    metrics: Sequence[str],
    label_columns: Sequence[str] | None = None,
    exclude_columns: Sequence[str] = ("cell_type",),
) -> pd.DataFrame:
    """Test per-sample values of every unit between the conditions of every contrast.

    ``values`` is a long table with one row per sample and unit: ``tissue``, ``sample``,
    the ``units`` columns (e.g. ``cell_type, gene_set``; ligand-receptor pairs would use
    ``sender, receiver, ligand, receptor``, trajectories ``lineage``), ``n_cells`` (the
    cells behind the sample's values) and one column per metric. ``designs`` come from
    :func:`~mscflow.contrast.design.contrast_designs`.

    Per contrast (its tissue's rows) x unit x metric one row: group sizes, group means,
    ``effect`` (condition - reference) with 95% CI, statistic, df and p-value of
    ``settings.score_test`` (covariates with ``ols``), then BH ``padj`` per (contrast,
    metric) and ``significant``. Samples with fewer than ``min_cells_per_sample`` cells are
    left out (named in ``note``); ``status`` is ``skipped`` when a group keeps fewer than
    ``min_samples_per_group`` samples or the unit's value in ``exclude_columns`` is in
    ``exclude_cell_types``, and ``no_test`` when the design allows no test (the effect is
    then the difference of group means). ``label_columns`` (default: the first unit
    column) name the unit in the skip note, e.g. ``cell type 'AT2'``.
    """
    labels = list(label_columns) if label_columns is not None else list(units[:1])
    excluded_by = [c for c in exclude_columns if c in units]
    rows: list[dict] = []
    for cd in designs:
        part = values[values["tissue"] == cd.contrast.tissue]
        for key, sub in part.groupby(list(units), sort=True):
            unit = dict(zip(units, key if isinstance(key, tuple) else (key,), strict=True))
            sub = sub.set_index("sample").reindex(cd.design.index)
            us = cd.unit_samples(sub["n_cells"], settings.min_cells_per_sample)
            excluded = any(unit[c] in settings.exclude_cell_types for c in excluded_by)
            name = ", ".join(f"{c.replace('_', ' ')} {unit[c]!r}" for c in labels)
            for metric in metrics:
                row = _test_row(cd, us, sub[metric][us.kept], settings, name, excluded)
                rows.append({**row, **unit, "metric": metric})
    columns = ["contrast", "tissue", "condition", "reference", *units, "metric",
               "n_samples_condition", "n_samples_reference", "min_cells_per_sample",
               "mean_condition", "mean_reference", "effect", "ci_low", "ci_high", "statistic",
               "df", "pvalue", "test", "covariates", "status", "note"]
    return add_fdr(pd.DataFrame(rows, columns=columns), ["contrast", "metric"], settings.fdr)


def _test_row(
    cd: ContrastDesign, us: UnitSamples, y: pd.Series, settings: ContrastSettings,
    unit_name: str, excluded: bool,
) -> dict:
    """One contrast x unit x metric: the values ``y`` of the kept samples tested."""
    n_c, n_r = us.sizes
    g = (us.design["is_condition"] == 1).to_numpy()
    row = {
        **cd.labels,
        "n_samples_condition": n_c, "n_samples_reference": n_r,
        "min_cells_per_sample": int(us.n_cells.min()) if len(us.n_cells) else 0,
        "mean_condition": float(y[g].mean()) if n_c else np.nan,
        "mean_reference": float(y[~g].mean()) if n_r else np.nan,
        "test": settings.score_test, "covariates": cd.covariates,
    }
    if excluded:
        return {**row, **_EMPTY, "status": STATUS_SKIPPED, "note": EXCLUDED_NOTE}
    if cd.note is not None:
        effect = float(row["mean_condition"] - row["mean_reference"]) if n_c and n_r else np.nan
        note = "; ".join(x for x in (cd.note, us.drop_note) if x)
        return {**row, **_EMPTY, "effect": effect, "status": STATUS_NO_TEST, "note": note}
    if us.too_few(settings.min_samples_per_group):
        return {**row, **_EMPTY, "status": STATUS_SKIPPED,
                "note": us.skip_note(unit_name, settings.min_samples_per_group)}
    res = test_shift(y, us.design, cd.contrast.covariates, settings.score_test)
    note = res.pop("note")
    status = STATUS_TESTED if np.isfinite(res["pvalue"]) else STATUS_NO_TEST
    return {**row, **res, "status": status, "note": "; ".join(x for x in (note, us.drop_note) if x)}


def score_shifts(
    obs: pd.DataFrame,
    contrasts: Sequence[Contrast],
    settings: ContrastSettings,
    samples: pd.DataFrame | None = None,
    per_sample: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per contrast x cell type x gene set x metric (mean, frac_above): effect, CI, p, FDR
    (:func:`replicate_tests` on :func:`per_sample_scores`)."""
    cols = select_score_columns(obs, settings)
    if per_sample is None:
        per_sample = per_sample_scores(obs, cols, settings.score_threshold, settings.score_prefix)
    designs = contrast_designs(obs, samples, contrasts, settings.min_samples_per_group)
    return replicate_tests(per_sample, designs, settings, units=("cell_type", "gene_set"),
                           metrics=("mean", "frac_above"))
