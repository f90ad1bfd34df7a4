"""Tests on per-sample values and multiple-testing control.

* :func:`test_shift`: a condition effect on one per-sample value: OLS (default; the pooled
  t-test without covariates), Welch, or Mann-Whitney with its exact Moses CI.
* :func:`quasi_glm`: quasi-Poisson / quasi-binomial GLM for counts (composition).
* :func:`add_fdr`: Benjamini-Hochberg per family and the ``significant`` column.

scipy and statsmodels are imported inside the functions: ``import mscflow.contrast`` stays
light enough for ``common.smk`` to validate contrasts at parse time.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from mscflow.contrast.design import design_matrix, design_problem
from mscflow.contrast.settings import SCORE_TESTS

__all__ = [
    "STATUS_NO_TEST",
    "STATUS_SKIPPED",
    "STATUS_TESTED",
    "add_fdr",
    "bh_adjust",
    "ols_test",
    "quasi_glm",
    "test_shift",
]

# Every result row has one of these statuses; untested rows say why in ``note``.
STATUS_TESTED = "tested"
STATUS_SKIPPED = "skipped"  # too few cells or samples, or excluded by the settings
STATUS_NO_TEST = "no_test"  # the design has no replicates or residual degrees of freedom


def bh_adjust(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values; NaNs stay NaN and are not counted."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return out
    pv = p[ok]
    order = np.argsort(pv, kind="mergesort")
    ranked = pv[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    adj = np.empty(m)
    adj[order] = np.minimum(ranked, 1.0)
    out[ok] = adj
    return out


def add_fdr(df: pd.DataFrame, family: list[str], fdr: float) -> pd.DataFrame:
    """Add BH ``padj`` per ``family`` and ``significant`` (padj < fdr); ``status`` and
    ``note`` become the last columns."""
    df = df.copy()
    df["padj"] = np.nan
    for _, idx in df.groupby(family, sort=False).groups.items():
        df.loc[idx, "padj"] = bh_adjust(df.loc[idx, "pvalue"].to_numpy())
    df["significant"] = (df["padj"] < fdr).fillna(False).astype(bool)
    cols = [c for c in df.columns if c not in ("status", "note")] + ["status", "note"]
    return df[cols].reset_index(drop=True)


def test_shift(
    y: pd.Series, design: pd.DataFrame, covariates: Sequence[str] = (), method: str = "ols"
) -> dict:
    """Test a per-sample value ``y`` for a condition effect.

    Returns ``effect`` (condition - reference; Hodges-Lehmann shift for the rank test),
    ``ci_low``/``ci_high`` (95%), ``statistic``, ``df``, ``pvalue`` and a ``note`` (empty
    when the test ran). ``design`` comes from :func:`~mscflow.contrast.design.contrast_design`.
    """
    from scipy import stats

    y = y.astype(float).loc[design.index]
    g = design["is_condition"].to_numpy() == 1
    res = {
        "effect": float(y[g].mean() - y[~g].mean()) if g.any() and (~g).any() else np.nan,
        "ci_low": np.nan,
        "ci_high": np.nan,
        "statistic": np.nan,
        "df": np.nan,
        "pvalue": np.nan,
        "note": "",
    }
    if method == "ols":
        return ols_test(y, design_matrix(design, covariates), res)
    if covariates:
        raise ValueError(
            f"score_test={method!r} cannot adjust for covariates {list(covariates)}; "
            "use score_test: ols or drop the covariates from the contrast"
        )
    a, b = y[g].to_numpy(), y[~g].to_numpy()
    if len(a) < 2 or len(b) < 2:
        res["note"] = f"{method} needs >= 2 samples per group ({len(a)} vs {len(b)})"
        return res
    if method == "welch":
        if np.var(a) == 0 and np.var(b) == 0:
            res["note"] = "no within-group variance; test undefined"
            return res
        t = stats.ttest_ind(a, b, equal_var=False)
        ci = t.confidence_interval(0.95)
        res.update(
            statistic=float(t.statistic), df=float(t.df), pvalue=float(t.pvalue),
            ci_low=float(ci.low), ci_high=float(ci.high),
        )
        return res
    if method == "mannwhitney":
        return _mannwhitney(a, b, res)
    raise ValueError(f"unknown score test {method!r}; choose one of {SCORE_TESTS}")


def ols_test(y: pd.Series, X: pd.DataFrame, res: dict) -> dict:
    """OLS fit of ``y`` on ``X``; fill ``res`` with the ``is_condition`` coefficient (its
    ``note`` says why no p-value when the design or the values allow none)."""
    import statsmodels.api as sm

    n, p = X.shape
    if np.linalg.matrix_rank(X.to_numpy()) < p:
        res["note"] = str(design_problem(X))
        return res
    fit = sm.OLS(np.asarray(y, dtype=float), X.to_numpy()).fit()
    j = list(X.columns).index("is_condition")
    res["effect"] = float(fit.params[j])
    if n - p < 1:
        res["note"] = str(design_problem(X))
        return res
    res["df"] = float(fit.df_resid)
    if not np.isfinite(fit.bse[j]) or fit.bse[j] == 0:
        res["note"] = ("no test possible: per-sample values have no residual variance "
                       "(e.g. no cell above score_threshold in any sample)")
        return res
    ci = fit.conf_int(alpha=0.05)[j]
    res.update(
        statistic=float(fit.tvalues[j]), pvalue=float(fit.pvalues[j]),
        ci_low=float(ci[0]), ci_high=float(ci[1]),
    )
    return res


def _mwu_null_cdf(m: int, n: int) -> np.ndarray:
    """Exact null CDF of the Mann-Whitney U statistic (no ties) for sizes ``m``, ``n``."""
    # f[i][j] = distribution of U for sizes (i, j); U ranges 0..i*j
    f = [[np.ones(1)] + [None] * n]  # type: ignore[list-item]
    for j in range(1, n + 1):
        f[0][j] = np.ones(1)
    for i in range(1, m + 1):
        row = [np.ones(1)] + [None] * n  # type: ignore[list-item]
        for j in range(1, n + 1):
            a = np.zeros(i * j + 1)
            prev_i = f[i - 1][j]  # last element from x: adds j to U
            a[j : j + len(prev_i)] += prev_i
            prev_j = row[j - 1]
            a[: len(prev_j)] += prev_j
            row[j] = a
        f.append(row)
    counts = f[m][n]
    return np.cumsum(counts) / counts.sum()


def _mannwhitney(a: np.ndarray, b: np.ndarray, res: dict) -> dict:
    """Two-sided Mann-Whitney test with Hodges-Lehmann shift and Moses 95% CI."""
    from scipy import stats

    test = stats.mannwhitneyu(a, b, alternative="two-sided")
    diffs = np.sort(np.subtract.outer(a, b).ravel())
    res.update(effect=float(np.median(diffs)), statistic=float(test.statistic),
               pvalue=float(test.pvalue))
    m, n = len(a), len(b)
    if m * n <= 2500:
        cdf = _mwu_null_cdf(m, n)
        # largest c with P(U <= c - 1) <= 0.025; CI = [D_(c), D_(mn + 1 - c)] (1-based)
        c = int(np.searchsorted(cdf, 0.025, side="right"))
    else:
        mu, sd = m * n / 2, np.sqrt(m * n * (m + n + 1) / 12)
        c = int(np.floor(mu - 1.959964 * sd))
    if c < 1:
        res["note"] = f"95% CI not attainable by the rank test with {m} vs {n} samples"
    else:
        res.update(ci_low=float(diffs[c - 1]), ci_high=float(diffs[m * n - c]))
    return res


def quasi_glm(
    y: pd.Series, n: pd.Series, X: pd.DataFrame, offset: pd.Series, method: str, row: dict
) -> str:
    """Quasi-Poisson (with ``offset``) or quasi-binomial (``y`` of ``n``) GLM of counts.

    Fills ``row`` with the log2 ``effect``, CI, t statistic, df, p-value and the Pearson
    ``dispersion`` (floored at 1 for the standard error); returns a note ('' or the
    zero-count correction applied).
    """
    import statsmodels.api as sm
    from scipy import stats
    from statsmodels.tools.sm_exceptions import PerfectSeparationWarning

    succ, fail = y.to_numpy(float), (n - y).to_numpy(float)
    note = ""
    g = X["is_condition"].to_numpy() == 1
    if min(succ[g].sum(), succ[~g].sum()) == 0 or (
        method == "quasibinomial" and min(fail[g].sum(), fail[~g].sum()) == 0
    ):
        succ, fail = succ + 0.5, fail + 0.5
        note = "zero cells in one group: 0.5 added to counts (Haldane-Anscombe correction)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PerfectSeparationWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        if method == "quasibinomial":
            model = sm.GLM(np.column_stack([succ, fail]), X.to_numpy(),
                           family=sm.families.Binomial())
        else:
            model = sm.GLM(succ, X.to_numpy(), family=sm.families.Poisson(),
                           offset=offset.to_numpy(float))
        fit = model.fit(scale=1.0)
    j = list(X.columns).index("is_condition")
    beta = float(fit.params[j]) / np.log(2)
    row["effect"] = beta
    df_resid = float(fit.df_resid)
    if df_resid < 1:
        return note
    phi = float(np.sum(fit.resid_pearson**2) / df_resid)
    se = float(fit.bse[j]) / np.log(2) * np.sqrt(max(phi, 1.0))
    tcrit = stats.t.ppf(0.975, df_resid)
    tval = beta / se
    row.update(
        ci_low=beta - tcrit * se, ci_high=beta + tcrit * se, statistic=tval, df=df_resid,
        pvalue=float(2 * stats.t.sf(abs(tval), df_resid)), dispersion=phi,
    )
    return note
