"""Sample-level designs: which samples a contrast compares and whether it can be tested.

Every analysis walks the same two steps, written once here:

1. :func:`contrast_designs`: per contrast, its samples (``is_condition`` 0/1 and the
   covariates, from :func:`contrast_design`) and :attr:`ContrastDesign.note`, the reason
   the design cannot be tested at all (too few replicates, confounded covariates), or None.
2. :meth:`ContrastDesign.unit_samples`: per unit (a cell type, ...), the samples with at
   least ``min_cells_per_sample`` cells of it, the group sizes after that filter and the
   notes naming the dropped samples or why the unit is skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mscflow.contrast.settings import Contrast
from mscflow.errors import InputDataError

__all__ = [
    "EXCLUDED_NOTE",
    "ContrastDesign",
    "UnitSamples",
    "contrast_design",
    "contrast_designs",
    "design_matrix",
    "design_problem",
    "group_sizes",
    "permute_conditions",
    "sample_metadata",
]

EXCLUDED_NOTE = "cell type excluded by contrast_settings.exclude_cell_types"


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
        raise InputDataError("obs has no 'sample' column; cannot aggregate cells per sample")
    present = pd.Index(pd.unique(obs["sample"].astype(str)), name="sample")
    if samples is not None:
        sheet = samples.copy()
        if "sample" in sheet.columns:
            sheet = sheet.set_index(sheet["sample"].astype(str))
        sheet.index = sheet.index.astype(str)
        missing = [s for s in present if s not in sheet.index]
        if missing:
            raise InputDataError(
                f"samples {missing[:5]} are in the data but not in the sample sheet")
        absent = [c for c in cols if c not in sheet.columns]
        if absent:
            raise InputDataError(f"sample sheet lacks column(s) {absent}")
        meta = sheet.loc[present, cols].copy()
    else:
        absent = [c for c in cols if c not in obs.columns]
        if absent:
            raise InputDataError(
                f"obs lacks column(s) {absent}; add them or pass the sample sheet")
        grp = obs[["sample", *cols]].astype({"sample": str}).groupby("sample", observed=True)
        nuniq = grp.nunique(dropna=False)
        bad = nuniq.columns[(nuniq > 1).any()].tolist()
        if bad:
            raise InputDataError(
                f"obs column(s) {bad} vary within a sample; they must be per-sample")
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
        raise InputDataError(
            f"contrast {contrast.name!r}: covariate column(s) {missing} missing")
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


def design_problem(X: pd.DataFrame) -> str | None:
    """Why the design matrix ``X`` cannot give a test of ``is_condition`` (or ``None``)."""
    n, p = X.shape
    if np.linalg.matrix_rank(X.to_numpy()) < p:
        rest = X.drop(columns="is_condition")
        if np.linalg.matrix_rank(rest.to_numpy()) < rest.shape[1]:
            return "covariates are collinear with each other"
        return "condition is confounded with the covariates (design is rank deficient)"
    if n - p < 1:
        return f"no residual degrees of freedom ({n} samples, {p} model terms)"
    return None


def group_sizes(design: pd.DataFrame) -> tuple[int, int]:
    """Number of ``condition`` and of ``reference`` samples in ``design``."""
    g = design["is_condition"] == 1
    return int(g.sum()), int((~g).sum())


def _design_note(contrast: Contrast, design: pd.DataFrame, min_samples: int) -> str | None:
    """Why the contrast's design (before any cell filter) cannot be tested, else ``None``."""
    n_c, n_r = group_sizes(design)
    if min(n_c, n_r) < max(2, min_samples):
        return (
            f"no test possible: tissue {contrast.tissue!r} has {n_c} sample(s) of "
            f"{contrast.condition!r} and {n_r} of {contrast.reference!r} "
            f"(need >= {max(2, min_samples)} replicates per condition)"
        )
    problem = design_problem(design_matrix(design, contrast.covariates))
    if problem:
        return f"no test possible: {problem} (covariates {list(contrast.covariates)})"
    return None


@dataclass(frozen=True)
class UnitSamples:
    """The samples of one unit (e.g. a cell type) of a contrast and the cell filter.

    ``n_cells``: the unit's cells in every sample of the contrast (0 where absent);
    ``design``: the rows of the samples with at least ``min_cells`` of them.
    """

    contrast: Contrast
    n_cells: pd.Series
    design: pd.DataFrame
    min_cells: int

    @property
    def kept(self) -> np.ndarray:
        """Boolean mask over ``n_cells``: samples that pass the cell filter."""
        return (self.n_cells >= self.min_cells).to_numpy()

    @property
    def sizes(self) -> tuple[int, int]:
        """Kept samples of ``condition`` and of ``reference``."""
        return group_sizes(self.design)

    @property
    def drop_note(self) -> str:
        """``excluded sample(s) with < N cells: s1 (3), s2 (0)``, or '' if none dropped."""
        dropped = self.n_cells.index[~self.kept]
        if not len(dropped):
            return ""
        return (f"excluded sample(s) with < {self.min_cells} cells: "
                + ", ".join(f"{s} ({int(self.n_cells[s])})" for s in dropped))

    def too_few(self, min_samples: int) -> bool:
        """Whether either group keeps fewer than ``min_samples`` samples."""
        return min(self.sizes) < min_samples

    def skip_note(self, unit: str, min_samples: int) -> str:
        """Why the unit (e.g. ``"cell type 'AT2'"``) is skipped: group sizes after the
        cell filter and the dropped samples."""
        k = self.contrast
        n_c, n_r = self.sizes
        return (f"{unit} in {k.tissue!r}: {n_c} {k.condition!r} and {n_r} {k.reference!r} "
                f"sample(s) with >= {self.min_cells} cells (need >= {min_samples} per "
                f"group); " + self.drop_note)


@dataclass(frozen=True)
class ContrastDesign:
    """One contrast, its samples (:func:`contrast_design`) and ``note``: why the design
    cannot be tested whatever the unit (``None`` when it can)."""

    contrast: Contrast
    design: pd.DataFrame
    note: str | None

    @property
    def labels(self) -> dict[str, str]:
        """The contrast columns every result row starts with."""
        k = self.contrast
        return {"contrast": k.name, "tissue": k.tissue, "condition": k.condition,
                "reference": k.reference}

    @property
    def covariates(self) -> str:
        """The covariates as written in the result tables (``a,b``)."""
        return ",".join(self.contrast.covariates)

    def unit_samples(self, n_cells: pd.Series, min_cells: int) -> UnitSamples:
        """Apply the cell filter to one unit; ``n_cells`` is indexed by sample (samples
        missing from it have no cells of the unit)."""
        counts = n_cells.reindex(self.design.index).fillna(0).astype(int)
        keep = (counts >= min_cells).to_numpy()
        return UnitSamples(self.contrast, counts, self.design[keep], min_cells)


def contrast_designs(
    obs: pd.DataFrame,
    samples: pd.DataFrame | None,
    contrasts: Sequence[Contrast],
    min_samples: int,
) -> Iterator[ContrastDesign]:
    """The design of each contrast in turn, from the samples present in ``obs`` (metadata
    from the sample sheet when given, see :func:`sample_metadata`)."""
    covariates = sorted({c for k in contrasts for c in k.covariates})
    meta = sample_metadata(obs, samples, covariates)
    for k in contrasts:
        design = contrast_design(meta, k)
        yield ContrastDesign(k, design, _design_note(k, design, min_samples))


def permute_conditions(
    meta: pd.DataFrame, seed: int, within: str = "tissue", balanced: bool = True
) -> pd.DataFrame:
    """Return ``meta`` with ``condition`` labels permuted among samples within ``within``.

    With ``balanced=True`` the permutation is redrawn (same RNG stream, up to 200 times)
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
