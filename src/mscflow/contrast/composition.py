"""Composition: cell-type abundance per sample tested between conditions.

Defaults to a quasi-Poisson GLM of each cell type's count per sample with a
median-of-ratios offset across cell types (robust to a minority of changing types, so one
expanding population does not make every other type look depleted); dispersion from the
Pearson statistic (floored at 1), t-based inference on the residual degrees of freedom.
``quasibinomial`` (type vs rest: the share) and ``clr`` are alternatives.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mscflow.contrast.design import (
    EXCLUDED_NOTE,
    ContrastDesign,
    contrast_designs,
    design_matrix,
    design_problem,
    group_sizes,
)
from mscflow.contrast.settings import Contrast, ContrastSettings
from mscflow.contrast.stats import (
    STATUS_NO_TEST,
    STATUS_SKIPPED,
    STATUS_TESTED,
    add_fdr,
    ols_test,
    quasi_glm,
)
from mscflow.errors import InputDataError

__all__ = ["composition_counts", "composition_tests"]

EFFECT_SCALES = {"quasipoisson": "log2_abundance_ratio", "quasibinomial": "log2_odds_ratio",
                 "clr": "clr_log2_difference"}


def composition_counts(obs: pd.DataFrame) -> pd.DataFrame:
    """Cells per tissue x sample x cell type (zeros included) with per-sample proportion."""
    need = ["tissue", "sample", "cell_type", "condition"]
    absent = [c for c in need if c not in obs.columns]
    if absent:
        raise InputDataError(f"obs lacks column(s) {absent} needed for composition")
    df = obs[need].astype(str)
    parts = []
    for tissue, sub in df.groupby("tissue", sort=True):
        tab = pd.crosstab(sub["sample"], sub["cell_type"]).sort_index().sort_index(axis=1)
        long = tab.stack().rename("n_cells").reset_index()
        long.insert(0, "tissue", tissue)
        parts.append(long)
    out = pd.concat(parts, ignore_index=True)
    out["n_total"] = out.groupby(["tissue", "sample"])["n_cells"].transform("sum")
    out["proportion"] = out["n_cells"] / out["n_total"]
    cond = df.groupby("sample")["condition"].first()
    out.insert(2, "condition", out["sample"].map(cond))
    return out


def composition_tests(
    obs: pd.DataFrame,
    contrasts: Sequence[Contrast],
    settings: ContrastSettings,
    samples: pd.DataFrame | None = None,
    counts: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per contrast x cell type: change in abundance, respecting the compositional sum.

    Effects are log2 and positive when the type is more abundant in ``condition``:

    * ``quasipoisson`` (default): quasi-Poisson GLM of the type's cell count with a
      per-sample median-of-ratios offset computed across cell types (as DESeq2 does for
      genes). A single expanding type then leaves the others at ~0 instead of dragging
      them down, provided fewer than half of the types change (``log2_abundance_ratio``).
    * ``quasibinomial``: type vs all other cells of the sample (``log2_odds_ratio``); this
      answers "did the share change", so other types shift when one type expands.
    * ``clr``: OLS on centred log2-ratios of counts + 0.5 (``clr_log2_difference``).

    BH FDR per contrast over cell types.
    """
    if counts is None:
        counts = composition_counts(obs)
    rows = []
    for cd in contrast_designs(obs, samples, contrasts, settings.min_samples_per_group):
        tab = (
            counts[counts["tissue"] == cd.contrast.tissue]
            .pivot(index="sample", columns="cell_type", values="n_cells")
            .reindex(cd.design.index).fillna(0).sort_index(axis=1)
        )
        eligible = [c for c in tab.columns if tab[c].sum() >= settings.min_cells_per_sample
                    and c not in settings.exclude_cell_types]
        offset = _composition_offset(tab, eligible, settings.composition_test)
        for ct in tab.columns:
            rows.append(_composition_row(cd, ct, tab, settings, offset, ct in eligible))
    return add_fdr(pd.DataFrame(rows), ["contrast"], settings.fdr)


def _composition_offset(tab: pd.DataFrame, eligible: list[str], method: str) -> pd.Series:
    """Per-sample offset: log median-of-ratios size factor, or clr centre (log2)."""
    if not eligible:
        return pd.Series(0.0, index=tab.index)
    if method == "clr":
        return np.log2(tab[eligible] + 0.5).mean(axis=1)
    logc = np.log(tab[eligible] + 0.5)
    lsf = (logc - logc.mean(axis=0)).median(axis=1)
    return lsf - lsf.mean()


def _composition_row(
    cd: ContrastDesign, ct: str, tab: pd.DataFrame, settings: ContrastSettings,
    offset: pd.Series, eligible: bool,
) -> dict:
    """Test one cell type's abundance for one contrast."""
    method = settings.composition_test
    design = cd.design
    n = tab.sum(axis=1)
    y = tab[ct]
    g = (design["is_condition"] == 1).to_numpy()
    n_c, n_r = group_sizes(design)
    prop = y / n.replace(0, np.nan)
    row = {
        **cd.labels, "cell_type": ct,
        "n_samples_condition": n_c, "n_samples_reference": n_r,
        "cells_condition": int(y[g].sum()), "cells_reference": int(y[~g].sum()),
        "prop_condition": float(prop[g].mean()) if n_c else np.nan,
        "prop_reference": float(prop[~g].mean()) if n_r else np.nan,
        "effect": np.nan, "ci_low": np.nan, "ci_high": np.nan, "statistic": np.nan,
        "df": np.nan, "pvalue": np.nan, "dispersion": np.nan, "test": method,
        "effect_scale": EFFECT_SCALES[method], "covariates": cd.covariates,
    }
    if n_c == 0 or n_r == 0:
        return {**row, "status": STATUS_NO_TEST, "note": cd.note or "empty group"}
    if ct in settings.exclude_cell_types:
        return {**row, "status": STATUS_SKIPPED, "note": EXCLUDED_NOTE}
    if not eligible:
        return {**row, "status": STATUS_SKIPPED,
                "note": f"cell type {ct!r} has {int(y.sum())} cells across the contrast's "
                        f"samples (< min_cells_per_sample={settings.min_cells_per_sample})"}
    # an untestable design still reports the effect of the model without covariates
    covariates = cd.contrast.covariates if cd.note is None else ()
    X = design_matrix(design, covariates)
    problem = design_problem(X)
    if problem and cd.note is None:
        return {**row, "status": STATUS_NO_TEST, "note": problem}
    if method == "clr":
        res = ols_test(np.log2(y + 0.5) - offset, X, dict(row, note=""))
        row.update({kk: res[kk] for kk in ("effect", "ci_low", "ci_high", "statistic", "df",
                                             "pvalue")})
        note = res["note"]
    else:
        note = quasi_glm(y, n, X, offset, method, row)
    if cd.note is not None:
        row.update(ci_low=np.nan, ci_high=np.nan, statistic=np.nan, df=np.nan, pvalue=np.nan,
                   dispersion=np.nan)
        note = cd.note + "; effect from the model without covariates, no test"
    status = STATUS_TESTED if np.isfinite(row["pvalue"]) else STATUS_NO_TEST
    return {**row, "status": status, "note": note}
