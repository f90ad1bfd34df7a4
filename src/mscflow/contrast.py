"""Replicate-aware condition contrasts: score shifts, composition, pseudobulk DE and GSEA.

Every test treats the *sample* (biological replicate) as the unit of replication; cells
are only aggregated (per-sample means, fractions, counts or summed raw counts).

Design choices, documented here because they change what can be detected:

* Score shifts default to an ordinary least-squares linear model on per-sample values
  (``value ~ 1 + condition [+ covariates]``, 95% CI from the model). Without covariates
  this is the pooled-variance two-sample t-test. A Mann-Whitney rank test is offered
  (``score_test: mannwhitney``) but with 3 vs 3 samples its smallest attainable
  two-sided p-value is 0.1, so no effect could ever be called at FDR 0.05; its CI (Moses /
  Hodges-Lehmann) is reported as NaN when the design cannot attain 95% coverage.
* Composition defaults to a quasi-Poisson GLM of each cell type's count per sample with
  a median-of-ratios offset across cell types (robust to a minority of changing types, so
  one expanding population does not make every other type look depleted); dispersion
  from the Pearson statistic (floored at 1), t-based inference on the residual degrees of
  freedom. ``quasibinomial`` (type vs rest: the share) and ``clr`` are alternatives.
* Pseudobulk DE uses pydeseq2 on summed raw counts per sample; GSEA is gseapy prerank
  on the Wald statistic with local gene-set dictionaries only.
* Rows are never dropped silently: every (contrast, cell type[, gene set]) yields a row
  whose ``status`` is ``tested``, ``skipped`` (too few cells/samples, reason in ``note``)
  or ``no_test`` (design without replicates or residual degrees of freedom; p = NaN).
* Benjamini-Hochberg FDR is applied per family: score shifts per (contrast, metric) over
  cell types x gene sets, composition per contrast over cell types, pseudobulk DE per
  (contrast, cell type) over genes (pydeseq2's own), GSEA per contrast over cell types x
  gene sets on the permutation p-values (gseapy's own GSEA FDR is kept as ``fdr_gsea``;
  it is unstable with the small curated libraries used here).
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

__all__ = [
    "Contrast",
    "ContrastSettings",
    "GseaSettings",
    "STATUS_NO_TEST",
    "STATUS_SKIPPED",
    "STATUS_TESTED",
    "bh_adjust",
    "coerce_gene_sets",
    "composition_counts",
    "composition_tests",
    "contrast_summary",
    "contrast_design",
    "design_matrix",
    "gsea_prerank",
    "gsea_sets_for_plot",
    "load_programme_sets",
    "parse_contrasts",
    "parse_settings",
    "permute_conditions",
    "per_sample_scores",
    "pseudobulk_counts",
    "pseudobulk_de",
    "ranking_from_de",
    "read_gmt_lists",
    "running_enrichment",
    "sample_metadata",
    "score_columns",
    "score_shifts",
    "test_shift",
    "write_table",
]

log = logging.getLogger(__name__)

STATUS_TESTED = "tested"
STATUS_SKIPPED = "skipped"
STATUS_NO_TEST = "no_test"

SCORE_TESTS = ("ols", "welch", "mannwhitney")
COMPOSITION_TESTS = ("quasipoisson", "quasibinomial", "clr")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED_COLUMNS = {"sample", "tissue", "condition", "replicate", "species", "cell_type"}


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Contrast:
    """One condition contrast within a tissue: ``condition`` vs ``reference``."""

    name: str
    tissue: str
    condition: str
    reference: str
    covariates: tuple[str, ...] = ()


@dataclass(frozen=True)
class GseaSettings:
    """Settings for gseapy prerank."""

    permutations: int = 1000
    min_size: int = 5
    max_size: int = 500
    seed: int = 0
    weight: float = 1.0
    sets: tuple[str, ...] | None = None
    plot_sets: tuple[str, ...] = (
        "efferocytosis_combined", "il10_stat3_response", "il10_ligand_receptor",
    )


@dataclass(frozen=True)
class ContrastSettings:
    """Thresholds and test choices shared by all contrasts."""

    min_cells_per_sample: int = 10
    min_samples_per_group: int = 2
    score_threshold: float = 0.0
    fdr: float = 0.05
    score_test: str = "ols"
    composition_test: str = "quasipoisson"
    pseudobulk_min_counts: int = 10
    score_prefix: str = "score_"
    score_sets: tuple[str, ...] = ()
    exclude_cell_types: tuple[str, ...] = ("unassigned",)
    forest_sets: tuple[str, ...] = (
        "efferocytosis_combined", "efferocytosis_findme", "il10_stat3_response",
        "il10_ligand_receptor", "pan_macrophage", "momf",
    )
    gsea: GseaSettings = field(default_factory=GseaSettings)


def parse_settings(cfg: Mapping | None) -> ContrastSettings:
    """Build :class:`ContrastSettings` from the ``contrast_settings`` config mapping."""
    cfg = dict(cfg or {})
    gcfg = dict(cfg.pop("gsea", None) or {})
    pcfg = dict(cfg.pop("pseudobulk", None) or {})
    known = {f for f in ContrastSettings.__dataclass_fields__ if f not in ("gsea",)}
    known.discard("pseudobulk_min_counts")
    unknown = set(cfg) - known
    if unknown:
        raise ValueError(
            f"contrast_settings: unknown key(s) {sorted(unknown)}; allowed: "
            f"{sorted(known | {'gsea', 'pseudobulk'})}"
        )
    gknown = set(GseaSettings.__dataclass_fields__)
    if set(gcfg) - gknown:
        raise ValueError(
            f"contrast_settings.gsea: unknown key(s) {sorted(set(gcfg) - gknown)}; "
            f"allowed: {sorted(gknown)}"
        )
    if set(pcfg) - {"min_counts"}:
        raise ValueError(
            f"contrast_settings.pseudobulk: unknown key(s) {sorted(set(pcfg) - {'min_counts'})};"
            " allowed: ['min_counts']"
        )
    if gcfg.get("sets") is not None:
        gcfg["sets"] = tuple(str(s) for s in gcfg["sets"])
    if "plot_sets" in gcfg:
        gcfg["plot_sets"] = tuple(str(s) for s in gcfg["plot_sets"] or ())
    for key in ("score_sets", "exclude_cell_types", "forest_sets"):
        if key in cfg:
            cfg[key] = tuple(str(x) for x in cfg[key] or ())
    gsea = GseaSettings(**gcfg)
    settings = ContrastSettings(
        **cfg, gsea=gsea, pseudobulk_min_counts=int(pcfg.get("min_counts", 10))
    )
    _validate_settings(settings)
    return settings


def _validate_settings(s: ContrastSettings) -> None:
    """Raise ``ValueError`` naming the offending ``contrast_settings`` key."""
    if s.score_test not in SCORE_TESTS:
        raise ValueError(
            f"contrast_settings.score_test={s.score_test!r}; choose one of {SCORE_TESTS}"
        )
    if s.composition_test not in COMPOSITION_TESTS:
        raise ValueError(
            f"contrast_settings.composition_test={s.composition_test!r}; "
            f"choose one of {COMPOSITION_TESTS}"
        )
    if s.min_cells_per_sample < 1:
        raise ValueError("contrast_settings.min_cells_per_sample must be >= 1")
    if s.min_samples_per_group < 1:
        raise ValueError("contrast_settings.min_samples_per_group must be >= 1")
    if not 0 < s.fdr < 1:
        raise ValueError(f"contrast_settings.fdr={s.fdr} must lie in (0, 1)")
    g = s.gsea
    if g.min_size < 1 or g.max_size < g.min_size:
        raise ValueError(
            f"contrast_settings.gsea: need 1 <= min_size <= max_size, got "
            f"min_size={g.min_size}, max_size={g.max_size}"
        )
    if g.permutations < 1:
        raise ValueError("contrast_settings.gsea.permutations must be >= 1")


def parse_contrasts(
    entries: Sequence[Mapping] | None, samples: pd.DataFrame | None = None
) -> list[Contrast]:
    """Validate the ``contrasts`` config list against the sample sheet.

    Each entry needs ``name``, ``tissue``, ``condition``, ``reference`` and optional
    ``covariates`` (sample-sheet columns). Names must be unique and file-name safe.
    """
    out: list[Contrast] = []
    seen: set[str] = set()
    for i, e in enumerate(entries or []):
        missing = [k for k in ("name", "tissue", "condition", "reference") if k not in e]
        if missing:
            raise ValueError(f"contrasts[{i}]: missing key(s) {missing}")
        covs = e.get("covariates") or ()
        covs = [covs] if isinstance(covs, str) else covs
        c = Contrast(
            name=str(e["name"]),
            tissue=str(e["tissue"]),
            condition=str(e["condition"]),
            reference=str(e["reference"]),
            covariates=tuple(str(x) for x in covs),
        )
        if not _NAME_RE.match(c.name):
            raise ValueError(
                f"contrast {c.name!r}: name may only contain letters, digits, '_', '.', '-'"
            )
        if c.name in seen:
            raise ValueError(f"contrast {c.name!r} is listed twice in config 'contrasts'")
        seen.add(c.name)
        if c.condition == c.reference:
            raise ValueError(
                f"contrast {c.name!r}: condition and reference are both {c.condition!r}"
            )
        for cov in c.covariates:
            if cov in _RESERVED_COLUMNS or not _IDENT_RE.match(cov):
                raise ValueError(
                    f"contrast {c.name!r}: covariate {cov!r} must be a sample-sheet column "
                    f"name that is a Python identifier and not one of {sorted(_RESERVED_COLUMNS)}"
                )
        if samples is not None:
            _check_contrast_against_sheet(c, samples)
        out.append(c)
    return out


def _check_contrast_against_sheet(c: Contrast, samples: pd.DataFrame) -> None:
    """Check tissue, conditions and covariates of ``c`` exist in the sample sheet."""
    for col in ("tissue", "condition"):
        if col not in samples.columns:
            raise ValueError(f"sample sheet has no column {col!r} (needed by contrast {c.name!r})")
    tissues = sorted(samples["tissue"].astype(str).unique())
    if c.tissue not in tissues:
        raise ValueError(
            f"contrast {c.name!r}: tissue {c.tissue!r} not in the sample sheet "
            f"(tissues: {tissues}); fix config 'contrasts'"
        )
    sub = samples[samples["tissue"].astype(str) == c.tissue]
    conds = sorted(sub["condition"].astype(str).unique())
    for lvl in (c.condition, c.reference):
        if lvl not in conds:
            raise ValueError(
                f"contrast {c.name!r}: condition {lvl!r} has no samples in tissue "
                f"{c.tissue!r} (conditions there: {conds}); fix config 'contrasts'"
            )
    for cov in c.covariates:
        if cov not in samples.columns:
            raise ValueError(
                f"contrast {c.name!r}: covariate {cov!r} is not a sample-sheet column "
                f"(columns: {sorted(samples.columns)}); add it to the sheet or remove it"
            )
        if sub[cov].isna().any():
            raise ValueError(
                f"contrast {c.name!r}: covariate {cov!r} has missing values in tissue "
                f"{c.tissue!r}; fill them in the sample sheet"
            )


# --------------------------------------------------------------------------------------
# sample-level design
# --------------------------------------------------------------------------------------
def sample_metadata(
    obs: pd.DataFrame,
    samples: pd.DataFrame | None = None,
    columns: Iterable[str] = (),
) -> pd.DataFrame:
    """One row per sample present in ``obs`` with tissue, condition and ``columns``.

    Values come from the sample sheet when given (index or ``sample`` column = sample
    id), else from ``obs`` where they must be constant within each sample.
    """
    cols = ["tissue", "condition", *[c for c in columns if c not in ("tissue", "condition")]]
    if "sample" not in obs.columns:
        raise ValueError("obs has no 'sample' column; cannot aggregate cells per sample")
    present = pd.Index(pd.unique(obs["sample"].astype(str)), name="sample")
    if samples is not None:
        sheet = samples.copy()
        if "sample" in sheet.columns:
            sheet = sheet.set_index(sheet["sample"].astype(str))
        sheet.index = sheet.index.astype(str)
        missing = [s for s in present if s not in sheet.index]
        if missing:
            raise ValueError(f"samples {missing[:5]} are in the data but not in the sample sheet")
        absent = [c for c in cols if c not in sheet.columns]
        if absent:
            raise ValueError(f"sample sheet lacks column(s) {absent}")
        meta = sheet.loc[present, cols].copy()
    else:
        absent = [c for c in cols if c not in obs.columns]
        if absent:
            raise ValueError(f"obs lacks column(s) {absent}; add them or pass the sample sheet")
        grp = obs[["sample", *cols]].astype({"sample": str}).groupby("sample", observed=True)
        nuniq = grp.nunique(dropna=False)
        bad = nuniq.columns[(nuniq > 1).any()].tolist()
        if bad:
            raise ValueError(f"obs column(s) {bad} vary within a sample; they must be per-sample")
        meta = grp.first().loc[present]
    meta.index.name = "sample"
    meta["tissue"] = meta["tissue"].astype(str)
    meta["condition"] = meta["condition"].astype(str)
    return meta.sort_index()


def contrast_design(meta: pd.DataFrame, contrast: Contrast) -> pd.DataFrame:
    """Samples of ``contrast`` with a 0/1 ``is_condition`` column and its covariates."""
    sub = meta[
        (meta["tissue"] == contrast.tissue)
        & meta["condition"].isin([contrast.condition, contrast.reference])
    ].copy()
    sub["is_condition"] = (sub["condition"] == contrast.condition).astype(float)
    missing = [c for c in contrast.covariates if c not in sub.columns]
    if missing:
        raise ValueError(f"contrast {contrast.name!r}: covariate column(s) {missing} missing")
    return sub[["tissue", "condition", "is_condition", *contrast.covariates]]


def design_matrix(design: pd.DataFrame, covariates: Sequence[str]) -> pd.DataFrame:
    """Intercept + ``is_condition`` + covariates (categoricals one-hot, first level dropped).

    Numeric covariates enter linearly (centred); give strings in the sample sheet to
    treat a covariate as categorical.
    """
    X = pd.DataFrame(
        {"intercept": 1.0, "is_condition": design["is_condition"].astype(float)},
        index=design.index,
    )
    for cov in covariates:
        col = design[cov]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            X[cov] = col.astype(float) - float(col.astype(float).mean())
        else:
            levels = sorted(col.astype(str).unique())
            for lvl in levels[1:]:
                X[f"{cov}[{lvl}]"] = (col.astype(str) == lvl).astype(float)
    return X


def _design_problem(X: pd.DataFrame) -> str | None:
    """Return why ``X`` cannot give a test of ``is_condition`` (or ``None``)."""
    n, p = X.shape
    if np.linalg.matrix_rank(X.to_numpy()) < p:
        rest = X.drop(columns="is_condition")
        if np.linalg.matrix_rank(rest.to_numpy()) < rest.shape[1]:
            return "covariates are collinear with each other"
        return "condition is confounded with the covariates (design is rank deficient)"
    if n - p < 1:
        return f"no residual degrees of freedom ({n} samples, {p} model terms)"
    return None


def permute_conditions(
    meta: pd.DataFrame, seed: int, within: str = "tissue", balanced: bool = True
) -> pd.DataFrame:
    """Return ``meta`` with ``condition`` labels permuted among samples within ``within``.

    With ``balanced=True`` the permutation is redrawn (same RNG stream, up to 1000 times)
    until every new condition group mixes the original conditions as evenly as possible,
    so a planted effect cannot survive as a full or sign-flipped alignment.
    """
    rng = np.random.default_rng(seed)
    out = meta.copy()
    for key in sorted(out[within].astype(str).unique()):
        idx = out.index[out[within].astype(str) == key]
        labels = out.loc[idx, "condition"].astype(str).to_numpy()
        best, best_score = labels, np.inf
        for _ in range(200 if balanced else 1):
            perm = labels[rng.permutation(len(labels))]
            score = _imbalance(labels, perm) if balanced else 0.0
            if score < best_score:
                best, best_score = perm, score
        out.loc[idx, "condition"] = best
    return out


def _imbalance(orig: np.ndarray, perm: np.ndarray) -> float:
    """Largest deviation of original-label counts from proportional within new groups."""
    levels, codes = np.unique(orig, return_inverse=True)
    share = np.bincount(codes, minlength=len(levels)) / len(orig)
    worst = 0.0
    for lvl in np.unique(perm):
        members = codes[perm == lvl]
        observed = np.bincount(members, minlength=len(levels))
        worst = max(worst, float(np.abs(observed - share * len(members)).max()))
    return worst


# --------------------------------------------------------------------------------------
# multiple testing
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# two-group tests on per-sample values
# --------------------------------------------------------------------------------------
def test_shift(
    y: pd.Series, design: pd.DataFrame, covariates: Sequence[str] = (), method: str = "ols"
) -> dict:
    """Test a per-sample value ``y`` for a condition effect.

    Returns ``effect`` (condition - reference; Hodges-Lehmann shift for the rank test),
    ``ci_low``/``ci_high`` (95%), ``statistic``, ``df``, ``pvalue`` and a ``note`` (empty
    when the test ran). ``design`` comes from :func:`contrast_design`.
    """
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
        return _ols_test(y, design_matrix(design, covariates), res)
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


def _ols_test(y: pd.Series, X: pd.DataFrame, res: dict) -> dict:
    """OLS fit of ``y`` on ``X``; fill ``res`` with the ``is_condition`` coefficient."""
    import statsmodels.api as sm

    n, p = X.shape
    if np.linalg.matrix_rank(X.to_numpy()) < p:
        res["note"] = str(_design_problem(X))
        return res
    fit = sm.OLS(np.asarray(y, dtype=float), X.to_numpy()).fit()
    j = list(X.columns).index("is_condition")
    res["effect"] = float(fit.params[j])
    if n - p < 1:
        res["note"] = str(_design_problem(X))
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


# --------------------------------------------------------------------------------------
# score shifts
# --------------------------------------------------------------------------------------
def score_columns(obs: pd.DataFrame, prefix: str = "score_") -> list[str]:
    """Names of gene-set score columns in ``obs`` (sorted)."""
    return sorted(c for c in obs.columns if str(c).startswith(prefix))


def per_sample_scores(
    obs: pd.DataFrame, columns: Sequence[str], threshold: float = 0.0, prefix: str = "score_"
) -> pd.DataFrame:
    """Per tissue x cell type x sample x gene set: ``n_cells``, ``mean``, ``frac_above``.

    ``frac_above`` is the fraction of cells with score > ``threshold``.
    """
    need = ["tissue", "cell_type", "sample", *columns]
    absent = [c for c in need if c not in obs.columns]
    if absent:
        raise ValueError(f"obs lacks column(s) {absent} needed for score shifts")
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


def _group_sizes(design: pd.DataFrame) -> tuple[int, int]:
    g = design["is_condition"] == 1
    return int(g.sum()), int((~g).sum())


def _design_note(contrast: Contrast, design: pd.DataFrame, min_samples: int) -> str | None:
    """Why the contrast's design (before any cell filter) cannot be tested, else ``None``."""
    n_c, n_r = _group_sizes(design)
    if min(n_c, n_r) < max(2, min_samples):
        return (
            f"no test possible: tissue {contrast.tissue!r} has {n_c} sample(s) of "
            f"{contrast.condition!r} and {n_r} of {contrast.reference!r} "
            f"(need >= {max(2, min_samples)} replicates per condition)"
        )
    problem = _design_problem(design_matrix(design, contrast.covariates))
    if problem:
        return f"no test possible: {problem} (covariates {list(contrast.covariates)})"
    return None


def score_shifts(
    obs: pd.DataFrame,
    contrasts: Sequence[Contrast],
    settings: ContrastSettings,
    samples: pd.DataFrame | None = None,
    per_sample: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per contrast x cell type x gene set x metric (mean, frac_above): effect, CI, p, FDR."""
    cols = score_columns(obs, settings.score_prefix)
    if settings.score_sets:
        wanted = [f"{settings.score_prefix}{x}" for x in settings.score_sets]
        missing = [w for w in wanted if w not in cols]
        if missing:
            raise ValueError(
                f"contrast_settings.score_sets: columns {missing} not in obs "
                f"(available: {cols}); fix the set names"
            )
        cols = wanted
    if not cols:
        raise ValueError(
            f"obs has no gene-set score columns starting with {settings.score_prefix!r}; "
            "run the scoring step first or set contrast_settings.score_prefix"
        )
    if per_sample is None:
        per_sample = per_sample_scores(obs, cols, settings.score_threshold, settings.score_prefix)
    covs = sorted({c for k in contrasts for c in k.covariates})
    meta = sample_metadata(obs, samples, covs)
    rows: list[dict] = []
    for k in contrasts:
        design = contrast_design(meta, k)
        dnote = _design_note(k, design, settings.min_samples_per_group)
        ps = per_sample[per_sample["tissue"] == k.tissue]
        for (ct, gs), sub in ps.groupby(["cell_type", "gene_set"], sort=True):
            sub = sub.set_index("sample").reindex(design.index)
            sub["n_cells"] = sub["n_cells"].fillna(0).astype(int)
            for metric in ("mean", "frac_above"):
                row = _score_row(k, ct, gs, metric, sub, design, settings, dnote)
                if ct in settings.exclude_cell_types:
                    row.update(effect=np.nan, ci_low=np.nan, ci_high=np.nan, statistic=np.nan,
                               df=np.nan, pvalue=np.nan, status=STATUS_SKIPPED,
                               note=_EXCLUDED_NOTE)
                rows.append(row)
    out = pd.DataFrame(rows, columns=_SCORE_COLUMNS)
    return _finish(out, ["contrast", "metric"], settings.fdr)


_EXCLUDED_NOTE = "cell type excluded by contrast_settings.exclude_cell_types"

_SCORE_COLUMNS = [
    "contrast", "tissue", "condition", "reference", "cell_type", "gene_set", "metric",
    "n_samples_condition", "n_samples_reference", "min_cells_per_sample",
    "mean_condition", "mean_reference", "effect", "ci_low", "ci_high", "statistic", "df",
    "pvalue", "test", "covariates", "status", "note",
]


def _score_row(
    k: Contrast, ct: str, gs: str, metric: str, sub: pd.DataFrame, design: pd.DataFrame,
    settings: ContrastSettings, design_note: str | None,
) -> dict:
    """Test one cell type x gene set x metric for contrast ``k``."""
    keep = sub["n_cells"] >= settings.min_cells_per_sample
    dropped = sub.index[~keep].tolist()
    d = design[keep.to_numpy()]
    n_c, n_r = _group_sizes(d)
    y = sub.loc[keep, metric]
    g = d["is_condition"] == 1
    row = {
        "contrast": k.name, "tissue": k.tissue, "condition": k.condition,
        "reference": k.reference, "cell_type": ct, "gene_set": gs, "metric": metric,
        "n_samples_condition": n_c, "n_samples_reference": n_r,
        "min_cells_per_sample": int(sub["n_cells"].min()) if len(sub) else 0,
        "mean_condition": float(y[g.to_numpy()].mean()) if n_c else np.nan,
        "mean_reference": float(y[~g.to_numpy()].mean()) if n_r else np.nan,
        "test": settings.score_test, "covariates": ",".join(k.covariates),
    }
    drop_note = (
        f"excluded sample(s) with < {settings.min_cells_per_sample} cells: "
        + ", ".join(f"{s} ({int(sub.loc[s, 'n_cells'])})" for s in dropped)
        if dropped else ""
    )
    empty = dict(effect=np.nan, ci_low=np.nan, ci_high=np.nan, statistic=np.nan, df=np.nan,
                 pvalue=np.nan)
    if design_note is not None:
        res = test_shift(y, d, k.covariates, "ols") if n_c and n_r else dict(empty)
        res = {kk: (res[kk] if kk == "effect" else np.nan) for kk in empty}
        if n_c and n_r:
            res["effect"] = float(row["mean_condition"] - row["mean_reference"])
        return {**row, **res, "status": STATUS_NO_TEST,
                "note": "; ".join(x for x in (design_note, drop_note) if x)}
    if min(n_c, n_r) < settings.min_samples_per_group:
        return {**row, **empty, "status": STATUS_SKIPPED,
                "note": f"cell type {ct!r} in {k.tissue!r}: {n_c} {k.condition!r} and {n_r} "
                        f"{k.reference!r} sample(s) with >= {settings.min_cells_per_sample} "
                        f"cells (need >= {settings.min_samples_per_group} per group); "
                        + drop_note}
    res = test_shift(y, d, k.covariates, settings.score_test)
    note = res.pop("note")
    status = STATUS_TESTED if np.isfinite(res["pvalue"]) else STATUS_NO_TEST
    return {**row, **res, "status": status, "note": "; ".join(x for x in (note, drop_note) if x)}


def _finish(df: pd.DataFrame, family: list[str], fdr: float) -> pd.DataFrame:
    """Add BH ``padj`` per family and ``significant`` (padj < fdr) columns."""
    df = df.copy()
    df["padj"] = np.nan
    for _, idx in df.groupby(family, sort=False).groups.items():
        df.loc[idx, "padj"] = bh_adjust(df.loc[idx, "pvalue"].to_numpy())
    df["significant"] = (df["padj"] < fdr).fillna(False).astype(bool)
    cols = [c for c in df.columns if c not in ("status", "note")] + ["status", "note"]
    return df[cols].reset_index(drop=True)


# --------------------------------------------------------------------------------------
# composition
# --------------------------------------------------------------------------------------
def composition_counts(obs: pd.DataFrame) -> pd.DataFrame:
    """Cells per tissue x sample x cell type (zeros included) with per-sample proportion."""
    need = ["tissue", "sample", "cell_type", "condition"]
    absent = [c for c in need if c not in obs.columns]
    if absent:
        raise ValueError(f"obs lacks column(s) {absent} needed for composition")
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
    """
    if counts is None:
        counts = composition_counts(obs)
    covs = sorted({c for k in contrasts for c in k.covariates})
    meta = sample_metadata(obs, samples, covs)
    rows = []
    for k in contrasts:
        design = contrast_design(meta, k)
        dnote = _design_note(k, design, settings.min_samples_per_group)
        tab = (
            counts[counts["tissue"] == k.tissue]
            .pivot(index="sample", columns="cell_type", values="n_cells")
            .reindex(design.index).fillna(0).sort_index(axis=1)
        )
        eligible = [c for c in tab.columns if tab[c].sum() >= settings.min_cells_per_sample
                    and c not in settings.exclude_cell_types]
        offset = _composition_offset(tab, eligible, settings.composition_test)
        for ct in tab.columns:
            rows.append(_composition_row(k, ct, tab, design, settings, dnote,
                                         offset, ct in eligible))
    out = pd.DataFrame(rows)
    return _finish(out, ["contrast"], settings.fdr)


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
    k: Contrast, ct: str, tab: pd.DataFrame, design: pd.DataFrame,
    settings: ContrastSettings, design_note: str | None, offset: pd.Series, eligible: bool,
) -> dict:
    """Test one cell type's abundance for contrast ``k``."""
    method = settings.composition_test
    n = tab.sum(axis=1)
    y = tab[ct]
    g = (design["is_condition"] == 1).to_numpy()
    n_c, n_r = _group_sizes(design)
    prop = y / n.replace(0, np.nan)
    row = {
        "contrast": k.name, "tissue": k.tissue, "condition": k.condition,
        "reference": k.reference, "cell_type": ct,
        "n_samples_condition": n_c, "n_samples_reference": n_r,
        "cells_condition": int(y[g].sum()), "cells_reference": int(y[~g].sum()),
        "prop_condition": float(prop[g].mean()) if n_c else np.nan,
        "prop_reference": float(prop[~g].mean()) if n_r else np.nan,
        "effect": np.nan, "ci_low": np.nan, "ci_high": np.nan, "statistic": np.nan,
        "df": np.nan, "pvalue": np.nan, "dispersion": np.nan, "test": method,
        "effect_scale": {"quasipoisson": "log2_abundance_ratio",
                         "quasibinomial": "log2_odds_ratio",
                         "clr": "clr_log2_difference"}[method],
        "covariates": ",".join(k.covariates),
    }
    if n_c == 0 or n_r == 0:
        return {**row, "status": STATUS_NO_TEST, "note": design_note or "empty group"}
    if ct in settings.exclude_cell_types:
        return {**row, "status": STATUS_SKIPPED, "note": _EXCLUDED_NOTE}
    if not eligible:
        return {**row, "status": STATUS_SKIPPED,
                "note": f"cell type {ct!r} has {int(y.sum())} cells across the contrast's "
                        f"samples (< min_cells_per_sample={settings.min_cells_per_sample})"}
    covariates = k.covariates if design_note is None else ()
    X = design_matrix(design, covariates)
    problem = _design_problem(X)
    if problem and design_note is None:
        return {**row, "status": STATUS_NO_TEST, "note": problem}
    if method == "clr":
        res = _ols_test(np.log2(y + 0.5) - offset, X, dict(row, note=""))
        row.update({kk: res[kk] for kk in ("effect", "ci_low", "ci_high", "statistic", "df",
                                             "pvalue")})
        note = res["note"]
    else:
        note = _quasi_glm(y, n, X, offset, method, row)
    if design_note is not None:
        row.update(ci_low=np.nan, ci_high=np.nan, statistic=np.nan, df=np.nan, pvalue=np.nan,
                   dispersion=np.nan)
        note = design_note + "; effect from the model without covariates, no test"
    status = STATUS_TESTED if np.isfinite(row["pvalue"]) else STATUS_NO_TEST
    return {**row, "status": status, "note": note}


def _quasi_glm(
    y: pd.Series, n: pd.Series, X: pd.DataFrame, offset: pd.Series, method: str, row: dict
) -> str:
    """Quasi-Poisson (with ``offset``) or quasi-binomial GLM; fill ``row`` (log2); note."""
    import statsmodels.api as sm
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


# --------------------------------------------------------------------------------------
# pseudobulk DE
# --------------------------------------------------------------------------------------
def pseudobulk_counts(adata, layer: str = "counts") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Summed raw counts per tissue x cell type x sample.

    Returns ``(counts, groups)``: counts has one row per group (index ``tissue|cell_type|
    sample``) and one column per gene; groups has tissue, cell_type, sample, n_cells.
    """
    if layer not in adata.layers:
        raise ValueError(
            f"AnnData has no layer {layer!r} with raw counts (layers: {list(adata.layers)})"
        )
    X = adata.layers[layer]
    X = sp.csr_matrix(X) if not sp.issparse(X) else X.tocsr()
    data = X.data
    if data.size and not np.all(np.equal(np.mod(data, 1), 0)):
        raise ValueError(f"layer {layer!r} holds non-integer values; pseudobulk needs raw counts")
    obs = adata.obs[["tissue", "cell_type", "sample"]].astype(str)
    key = obs["tissue"] + "|" + obs["cell_type"] + "|" + obs["sample"]
    codes, uniques = pd.factorize(key, sort=True)
    ind = sp.csr_matrix(
        (np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(len(uniques), len(codes))
    )
    summed = np.asarray((ind @ X).todense()).round().astype(np.int64)
    counts = pd.DataFrame(summed, index=pd.Index(uniques, name="group"),
                          columns=adata.var_names.astype(str))
    parts = pd.Series(uniques).str.split("|", n=2, expand=True)
    groups = pd.DataFrame(
        {"tissue": parts[0].to_numpy(), "cell_type": parts[1].to_numpy(),
         "sample": parts[2].to_numpy(), "n_cells": np.bincount(codes)},
        index=counts.index,
    )
    return counts, groups


_DE_COLUMNS = [
    "contrast", "tissue", "condition", "reference", "cell_type", "gene", "baseMean",
    "log2FoldChange", "lfcSE", "stat", "pvalue", "padj", "n_samples_condition",
    "n_samples_reference", "covariates", "status", "note",
]


def pseudobulk_de(
    adata,
    contrasts: Sequence[Contrast],
    settings: ContrastSettings,
    samples: pd.DataFrame | None = None,
    n_cpus: int = 1,
    layer: str = "counts",
) -> pd.DataFrame:
    """pydeseq2 Wald test per contrast x cell type on summed raw counts (samples = replicates).

    Samples with fewer than ``min_cells_per_sample`` cells of the type are left out; genes
    with fewer than ``pseudobulk.min_counts`` summed counts are filtered. Cell types that
    cannot be tested give one row with ``gene`` empty and the reason in ``note``.
    """
    counts, groups = pseudobulk_counts(adata, layer)
    covs = sorted({c for k in contrasts for c in k.covariates})
    meta = sample_metadata(adata.obs, samples, covs)
    frames = []
    for k in contrasts:
        design = contrast_design(meta, k)
        dnote = _design_note(k, design, settings.min_samples_per_group)
        gk = groups[groups["tissue"] == k.tissue]
        for ct in sorted(gk["cell_type"].unique()):
            if ct in settings.exclude_cell_types:
                base = {"contrast": k.name, "tissue": k.tissue, "condition": k.condition,
                        "reference": k.reference, "cell_type": ct,
                        "covariates": ",".join(k.covariates)}
                frames.append(_single_row(base, STATUS_SKIPPED, _EXCLUDED_NOTE))
                continue
            frames.append(_de_one(k, ct, counts, gk, design, settings, dnote, n_cpus))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=_DE_COLUMNS)
    out["significant"] = (out["padj"] < settings.fdr).fillna(False).astype(bool)
    cols = [c for c in out.columns if c not in ("status", "note")] + ["status", "note"]
    return out[cols]


def _de_one(
    k: Contrast, ct: str, counts: pd.DataFrame, groups: pd.DataFrame, design: pd.DataFrame,
    settings: ContrastSettings, design_note: str | None, n_cpus: int,
) -> pd.DataFrame:
    """pydeseq2 for one contrast x cell type (or a single skipped/no-test row)."""
    gct = groups[groups["cell_type"] == ct].set_index("sample")
    n_cells = gct["n_cells"].reindex(design.index).fillna(0).astype(int)
    keep = n_cells >= settings.min_cells_per_sample
    d = design[keep.to_numpy()]
    n_c, n_r = _group_sizes(d)
    base = {"contrast": k.name, "tissue": k.tissue, "condition": k.condition,
            "reference": k.reference, "cell_type": ct, "n_samples_condition": n_c,
            "n_samples_reference": n_r, "covariates": ",".join(k.covariates)}
    dropped = n_cells.index[~keep.to_numpy()].tolist()
    drop_note = (
        f"excluded sample(s) with < {settings.min_cells_per_sample} cells: "
        + ", ".join(f"{s} ({n_cells[s]})" for s in dropped) if dropped else ""
    )
    mat = counts.loc[gct.loc[d.index, "n_cells"].index.map(
        lambda s: f"{k.tissue}|{ct}|{s}")] if len(d) else counts.iloc[:0]
    mat.index = d.index
    if design_note is None and min(n_c, n_r) < settings.min_samples_per_group:
        return _single_row(base, STATUS_SKIPPED,
                           f"cell type {ct!r} in {k.tissue!r}: {n_c} {k.condition!r} and {n_r} "
                           f"{k.reference!r} sample(s) with >= {settings.min_cells_per_sample} "
                           f"cells (need >= {settings.min_samples_per_group} per group); "
                           + drop_note)
    mat = mat.loc[:, mat.sum(axis=0) >= settings.pseudobulk_min_counts]
    if mat.shape[1] == 0:
        return _single_row(base, STATUS_SKIPPED,
                           f"no gene with >= {settings.pseudobulk_min_counts} summed counts")
    note = "; ".join(x for x in (design_note, drop_note) if x)
    if design_note is not None or _design_problem(design_matrix(d, k.covariates)):
        if n_c == 0 or n_r == 0:
            return _single_row(base, STATUS_NO_TEST, note or "empty group")
        res = _naive_lfc(mat, d)
        res = res.assign(**base, status=STATUS_NO_TEST,
                         note=note or str(_design_problem(design_matrix(d, k.covariates))))
        return res.reindex(columns=_DE_COLUMNS)
    res = _run_deseq(mat, d, k, n_cpus)
    return res.assign(**base, status=STATUS_TESTED, note=note).reindex(columns=_DE_COLUMNS)


def _single_row(base: dict, status: str, note: str) -> pd.DataFrame:
    return pd.DataFrame([{**base, "gene": "", "status": status, "note": note}]).reindex(
        columns=_DE_COLUMNS
    )


def _size_factors(mat: pd.DataFrame) -> np.ndarray:
    """DESeq2 median-of-ratios size factors (genes with any zero are ignored)."""
    pos = mat.loc[:, (mat > 0).all(axis=0)]
    if pos.shape[1] == 0:
        return (mat.sum(axis=1) / mat.sum(axis=1).mean()).to_numpy(float)
    logc = np.log(pos.to_numpy(float))
    return np.exp(np.median(logc - logc.mean(axis=0), axis=1))


def _naive_lfc(mat: pd.DataFrame, design: pd.DataFrame) -> pd.DataFrame:
    """log2 fold change of mean normalised counts (+0.5) when no test is possible."""
    norm = mat.div(_size_factors(mat), axis=0)
    g = (design["is_condition"] == 1).to_numpy()
    a, b = norm[g].mean(axis=0), norm[~g].mean(axis=0)
    return pd.DataFrame({"gene": mat.columns, "baseMean": norm.mean(axis=0).to_numpy(),
                         "log2FoldChange": np.log2((a + 0.5) / (b + 0.5)).to_numpy()})


def _run_deseq(mat: pd.DataFrame, d: pd.DataFrame, k: Contrast, n_cpus: int) -> pd.DataFrame:
    """Fit pydeseq2 (quiet, ``n_cpus`` workers) and return its Wald results table."""
    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.default_inference import DefaultInference
    from pydeseq2.ds import DeseqStats
    from threadpoolctl import threadpool_limits

    md = pd.DataFrame(index=mat.index.astype(str))
    md["condition"] = d["condition"].astype(str).to_numpy()
    terms = []
    for cov in k.covariates:
        col = d[cov]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            md[cov] = col.astype(float).to_numpy() - float(col.astype(float).mean())
        else:
            md[cov] = col.astype(str).to_numpy()
        if md[cov].nunique() > 1:
            terms.append(cov)
    formula = "~" + " + ".join([*terms, "condition"])
    inference = DefaultInference(n_cpus=max(1, int(n_cpus)))
    # per-gene fits are tiny: multi-threaded BLAS only adds overhead (8x slower measured)
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore")
        dds = DeseqDataSet(counts=mat.set_axis(md.index), metadata=md, design=formula,
                           refit_cooks=True, inference=inference, quiet=True)
        dds.deseq2()
        ds = DeseqStats(dds, contrast=["condition", k.condition, k.reference],
                        inference=inference, quiet=True)
        ds.summary()
    res = ds.results_df.copy()
    res.index.name = "gene"
    return res.reset_index()[["gene", "baseMean", "log2FoldChange", "lfcSE", "stat", "pvalue",
                              "padj"]]


# --------------------------------------------------------------------------------------
# gene sets and GSEA
# --------------------------------------------------------------------------------------
def read_gmt_lists(path: str | Path) -> dict[str, list[str]]:
    """Read a GMT file into ``{set: [genes]}``; ``GENE,weight`` entries keep genes with
    weight > 0 (GSEA sets are unweighted)."""
    sets: dict[str, list[str]] = {}
    for ln, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 3:
            raise ValueError(f"{path}:{ln}: GMT lines need name, description and >= 1 gene")
        genes = []
        for tok in parts[2:]:
            tok = tok.strip()
            if not tok:
                continue
            gene, _, w = tok.partition(",")
            if w and float(w) <= 0:
                continue
            genes.append(gene)
        sets[parts[0]] = list(dict.fromkeys(genes))
    return sets


def coerce_gene_sets(gene_sets: Mapping) -> dict[str, list[str]]:
    """Accept ``{set: [genes]}`` or ``{set: {gene: weight}}`` (keeps weight > 0)."""
    out = {}
    for name, genes in gene_sets.items():
        if isinstance(genes, Mapping):
            out[str(name)] = [str(g) for g, w in genes.items() if float(w) > 0]
        else:
            out[str(name)] = [str(g) for g in genes]
    return out


def load_programme_sets(
    gmts: Sequence[str], gmt_species: Sequence[str], data_species: str,
    var_names: Iterable[str], *, min_genes: int = 3, synonyms: str | Path | None = None,
    orthologs: str | Path | None = None,
) -> dict[str, list[str]]:
    """Programme GMTs matched to the data's gene names (synonyms, orthologs) via
    :mod:`mscflow.genesets`, as unweighted lists (genes with weight > 0)."""
    from mscflow.genesets import (
        load_gene_sets,
        match_gene_sets,
        read_orthologs,
        read_synonyms,
    )

    syn = read_synonyms(synonyms) if synonyms and Path(synonyms).exists() else None
    orth = read_orthologs(orthologs) if orthologs and Path(orthologs).exists() else None
    var_names = list(var_names)
    out: dict[str, list[str]] = {}
    for gmt, species in zip(gmts, gmt_species, strict=True):
        found, _ = match_gene_sets(load_gene_sets([gmt]), var_names, set_species=species,
                                   data_species=data_species, min_genes=min_genes,
                                   orthologs=orth, synonyms=syn)
        out.update(coerce_gene_sets(found))
    return out


def _match_genes(genes: Iterable[str], universe: pd.Index) -> list[str]:
    """Members of ``genes`` found in ``universe``, matching case-insensitively, in order."""
    lookup: dict[str, str] = {}
    for g in universe:
        lookup.setdefault(str(g).upper(), str(g))
    hits = [lookup.get(str(g).upper()) for g in genes]
    return list(dict.fromkeys(h for h in hits if h is not None))


def ranking_from_de(de: pd.DataFrame, by: str = "stat") -> pd.Series:
    """Descending, tie-broken (by gene name) ranking of genes from one DE table."""
    r = de[["gene", by]].dropna()
    r = r[r["gene"] != ""].sort_values([by, "gene"], ascending=[False, True], kind="mergesort")
    return pd.Series(r[by].to_numpy(float), index=pd.Index(r["gene"].astype(str), name="gene"))


_GSEA_COLUMNS = [
    "contrast", "tissue", "condition", "reference", "cell_type", "gene_set", "set_size",
    "matched_size", "es", "nes", "pvalue", "fdr", "fdr_gsea", "fwer", "leading_edge",
    "n_leading_edge",
    "significant", "status", "note",
]


def gsea_prerank(
    de: pd.DataFrame,
    gene_sets: Mapping,
    settings: ContrastSettings,
    threads: int = 1,
) -> pd.DataFrame:
    """gseapy prerank per contrast x cell type on the pydeseq2 Wald statistic.

    Positive NES = set shifted up in ``condition`` vs ``reference``. Sets with too few or
    too many matched genes, and cell types without a DE test, give rows with a status.
    """
    sets = coerce_gene_sets(gene_sets)
    if settings.gsea.sets is not None:
        unknown = [s for s in settings.gsea.sets if s not in sets]
        if unknown:
            raise ValueError(
                f"contrast_settings.gsea.sets: {unknown} not in the gene-set library "
                f"(available: {sorted(sets)[:20]}...)"
            )
        sets = {s: sets[s] for s in settings.gsea.sets}
    if not sets:
        raise ValueError("GSEA: the gene-set library is empty; check the GMT file(s)")
    rows: list[dict] = []
    keys = ["contrast", "tissue", "condition", "reference", "cell_type"]
    for key, sub in de.groupby(keys, sort=False):
        base = dict(zip(keys, key, strict=True))
        status = sub["status"].iloc[0]
        if status != STATUS_TESTED:
            for s in sorted(sets):
                rows.append({**base, "gene_set": s, "set_size": len(sets[s]),
                             "status": status, "note": f"no DE test: {sub['note'].iloc[0]}"})
            continue
        rows.extend(_gsea_one(base, ranking_from_de(sub), sets, settings, threads))
    out = pd.DataFrame(rows).reindex(columns=_GSEA_COLUMNS)
    for _, idx in out.groupby("contrast", sort=False).groups.items():
        out.loc[idx, "fdr"] = bh_adjust(out.loc[idx, "pvalue"].to_numpy(float))
    out["significant"] = (out["fdr"] < settings.fdr).fillna(False).astype(bool)
    return out


def _gsea_one(
    base: dict, ranking: pd.Series, sets: dict[str, list[str]], settings: ContrastSettings,
    threads: int,
) -> list[dict]:
    """Run prerank for one ranking; one row per gene set."""
    import gseapy

    g = settings.gsea
    matched = {s: _match_genes(genes, ranking.index) for s, genes in sets.items()}
    ok = {s: m for s, m in matched.items()
          if g.min_size <= len(m) <= g.max_size and len(m) < len(ranking)}
    rows = []
    for s in sorted(sets):
        if s not in ok:
            rows.append({**base, "gene_set": s, "set_size": len(sets[s]),
                         "matched_size": len(matched[s]), "status": STATUS_SKIPPED,
                         "note": f"{len(matched[s])} genes of the set in the ranking "
                                 f"(allowed {g.min_size}..{g.max_size})"})
    if not ok:
        return rows
    gp_logger = logging.getLogger("gseapy")
    prev = gp_logger.level
    gp_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pre = gseapy.prerank(
                rnk=ranking, gene_sets=ok, outdir=None, min_size=g.min_size,
                max_size=g.max_size, permutation_num=g.permutations, weight=g.weight,
                ascending=None, threads=max(1, int(threads)), no_plot=True, seed=g.seed,
                verbose=False,
            )
    finally:
        gp_logger.setLevel(prev)
    res = pre.res2d.set_index("Term")
    for s in sorted(ok):
        r = res.loc[s]
        lead = [x for x in str(r["Lead_genes"]).split(";") if x]
        rows.append({**base, "gene_set": s, "set_size": len(sets[s]),
                     "matched_size": len(ok[s]), "es": float(r["ES"]), "nes": float(r["NES"]),
                     "pvalue": max(float(r["NOM p-val"]), 1.0 / (g.permutations + 1)),
                     "fdr_gsea": float(r["FDR q-val"]),
                     "fwer": float(r["FWER p-val"]), "leading_edge": ";".join(lead),
                     "n_leading_edge": len(lead), "status": STATUS_TESTED, "note": ""})
    rows.sort(key=lambda x: x["gene_set"])
    return rows


def running_enrichment(ranking: pd.Series, genes: Iterable[str], weight: float = 1.0
                       ) -> pd.DataFrame:
    """Running GSEA enrichment score along a descending ``ranking`` for ``genes``.

    Returns columns ``rank``, ``value``, ``hit`` and ``running_es`` (Subramanian 2005).
    """
    members = set(_match_genes(genes, ranking.index))
    hit = ranking.index.isin(list(members))
    if hit.sum() == 0 or hit.all():
        raise ValueError("running_enrichment: the set must match some but not all genes")
    w = np.abs(ranking.to_numpy(float)) ** weight
    up = np.where(hit, w, 0.0)
    up = up / up.sum() if up.sum() > 0 else hit / hit.sum()
    down = np.where(hit, 0.0, 1.0 / (~hit).sum())
    return pd.DataFrame({"rank": np.arange(len(ranking)), "gene": ranking.index,
                         "value": ranking.to_numpy(float), "hit": hit,
                         "running_es": np.cumsum(up - down)})


def gsea_sets_for_plot(gsea: pd.DataFrame, patterns: Sequence[str]) -> list[str]:
    """Gene sets of ``gsea`` to draw: each entry of ``patterns`` is an exact set name or,
    if no set has that name, a case-insensitive substring. Order follows ``patterns``."""
    names = sorted(gsea["gene_set"].dropna().unique())
    out: list[str] = []
    for p in patterns:
        hits = [p] if p in names else [n for n in names if p.lower() in n.lower()]
        out.extend(h for h in hits if h not in out)
    return out


# --------------------------------------------------------------------------------------
# summary and output
# --------------------------------------------------------------------------------------
def contrast_summary(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per analysis x contrast: rows tested / skipped / no_test / significant, and the
    distinct reasons for untested rows (so the report says when no test was possible)."""
    rows = []
    for analysis, df in tables.items():
        if df.empty:
            continue
        unit = df.drop_duplicates(["contrast", "cell_type"]) if analysis == "pseudobulk_de" \
            else df
        for name, sub in df.groupby("contrast", sort=False):
            u = unit[unit["contrast"] == name]
            untested = sub.loc[sub["status"] != STATUS_TESTED, "note"].astype(str)
            reasons = sorted({r.split(";")[0] for r in untested if r})
            rows.append({
                "analysis": analysis, "contrast": name, "tissue": sub["tissue"].iloc[0],
                "units": "cell types" if analysis == "pseudobulk_de" else "rows",
                "n_tested": int((u["status"] == STATUS_TESTED).sum()),
                "n_skipped": int((u["status"] == STATUS_SKIPPED).sum()),
                "n_no_test": int((u["status"] == STATUS_NO_TEST).sum()),
                "n_significant": int(sub["significant"].sum()),
                "reasons_not_tested": " | ".join(reasons[:5]),
            })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------
def write_table(df: pd.DataFrame, tsv: str | Path, parquet: str | Path | None = None) -> None:
    """Write ``df`` as TSV (NaN as 'NA') and optionally parquet, creating directories."""
    for p in (tsv, parquet):
        if p is not None:
            Path(p).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(tsv, sep="\t", index=False, na_rep="NA", float_format="%.6g")
    if parquet is not None:
        df.to_parquet(parquet, index=False)
