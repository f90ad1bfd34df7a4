"""Ligand-receptor interactions tested between conditions, samples as the replicates.

Rule ``communication_contrasts`` (:func:`communication_contrast_stage`) reads the
per-sample expression tables of :mod:`mscflow.communication.sample` and, per contrast (its
tissue's samples):

1. builds every interaction's per-sample values (:class:`TissueInteractions`):
   ``lr_means`` (LR expression magnitude, as liana's CellPhoneDB) and ``lr_props`` (share of
   cells behind the weaker side), with ``n_cells`` = the smaller of the sender's and the
   receiver's cells in the sample;
2. keeps the interactions expressed (``lr_props >= communication.expr_prop``) in at least as
   many samples as the smaller condition group has (at least
   ``contrast_settings.min_samples_per_group``): a filter blind to the condition labels, as
   edgeR's filterByExpr. The focus pairs are always reported, as ``skipped`` when they fail
   it;
3. tests them with :func:`mscflow.contrast.replicate_tests` (OLS on the per-sample values,
   covariates of the contrast, 95% CI); BH FDR per contrast x metric x family, the focus
   axes being their own family (pre-specified hypotheses) and every other interaction the
   ``exploratory`` family;
4. puts beside each interaction of an axis with a ``response_set`` the receiver's score
   shift of that set (score_shifts, metric ``mean``), e.g. the IL-10/STAT3 response of the
   cells receiving IL-10.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mscflow import job
from mscflow.communication.sample import (
    KEYS,
    SKIPPED_COLUMNS,
    CommunicationSettings,
    FocusPairs,
    entity_table,
    load_resource,
    resolve_focus,
)
from mscflow.contrast import (
    STATUS_NO_TEST,
    STATUS_SKIPPED,
    STATUS_TESTED,
    Contrast,
    ContrastDesign,
    ContrastSettings,
    contrast_designs,
    parse_contrasts,
    replicate_tests,
)
from mscflow.contrast.design import design_matrix
from mscflow.contrast.stats import add_fdr
from mscflow.inputs.samplesheet import read_sample_sheet

__all__ = [
    "FAMILY_EXPLORATORY",
    "FAMILY_FOCUS",
    "METRICS",
    "TissueInteractions",
    "add_response",
    "cell_type_usage",
    "communication_contrast_stage",
    "focus_pair_table",
    "focus_problems_in_tissues",
    "interaction_tests",
    "replicate_tests_batched",
]

log = logging.getLogger(__name__)

METRICS = ("lr_means", "lr_props")
FAMILY_FOCUS = "focus"
FAMILY_EXPLORATORY = "exploratory"
CONSTANT_NOTE = "no test possible: the value is the same in every sample (no residual variance)"
RESPONSE_COLUMNS = ["response_set", "response_effect", "response_ci_low", "response_ci_high",
                    "response_padj", "response_status"]


@dataclass(frozen=True)
class TissueInteractions:
    """Every interaction of one tissue in every sample, as arrays.

    ``lr_means``/``lr_props``: samples x senders x receivers x pairs (NaN where a side's cell
    type was left out of the sample); ``n_cells``: samples x cell types (real counts, also
    of types left out); ``pairs``: the resource pairs whose genes the data hold.
    """

    samples: list[str]
    cell_types: list[str]
    pairs: pd.DataFrame
    lr_means: np.ndarray
    lr_props: np.ndarray
    n_cells: np.ndarray

    @classmethod
    def build(cls, expression: pd.DataFrame, resource: pd.DataFrame,
              cell_counts: pd.DataFrame | None = None) -> TissueInteractions:
        """From the per-gene expression tables of one tissue's samples; ``cell_counts``
        (sample, cell_type, n_cells) adds the counts of cell types left out of samples."""
        samples = sorted(expression["sample"].astype(str).unique())
        cell_types = sorted(expression["cell_type"].astype(str).unique())
        entities = set(resource["ligand"]) | set(resource["receptor"])
        ent = entity_table(expression, entities)
        found = set(ent["entity"])
        pairs = resource[resource["ligand"].isin(found) & resource["receptor"].isin(found)]
        pairs = pairs.reset_index(drop=True)
        names = sorted(found)
        s_idx = pd.Index(samples).get_indexer(ent["sample"].astype(str))
        t_idx = pd.Index(cell_types).get_indexer(ent["cell_type"].astype(str))
        e_idx = pd.Index(names).get_indexer(ent["entity"])
        shape = (len(samples), len(cell_types), len(names))
        mean, frac = np.full(shape, np.nan), np.full(shape, np.nan)
        mean[s_idx, t_idx, e_idx] = ent["mean"].to_numpy(float)
        frac[s_idx, t_idx, e_idx] = ent["frac"].to_numpy(float)
        lig = pd.Index(names).get_indexer(pairs["ligand"])
        rec = pd.Index(names).get_indexer(pairs["receptor"])
        lr_means = (mean[:, :, None, lig] + mean[:, None, :, rec]) / 2
        lr_props = np.fmin(frac[:, :, None, lig], frac[:, None, :, rec])
        lr_props[np.isnan(lr_means)] = np.nan
        counts = expression[["sample", "cell_type", "n_cells"]].drop_duplicates()
        if cell_counts is not None and len(cell_counts):
            counts = pd.concat([counts, cell_counts[["sample", "cell_type", "n_cells"]]])
        counts = counts[counts["sample"].isin(samples) & counts["cell_type"].isin(cell_types)]
        n_cells = np.zeros((len(samples), len(cell_types)))
        n_cells[pd.Index(samples).get_indexer(counts["sample"]),
                pd.Index(cell_types).get_indexer(counts["cell_type"])] = counts["n_cells"]
        return cls(samples, cell_types, pairs, lr_means, lr_props, n_cells)

    def pair_cells(self) -> np.ndarray:
        """samples x senders x receivers: the smaller of the two cell counts."""
        return np.minimum(self.n_cells[:, :, None], self.n_cells[:, None, :])

    def unit_mask(self, focus: pd.DataFrame) -> np.ndarray:
        """senders x receivers x pairs: True for the units of the focus pairs (their
        sender/receiver restrictions applied)."""
        mask = np.zeros(self.lr_means.shape[1:], dtype=bool)
        where = {(lig, rec): i for i, (lig, rec) in
                 enumerate(zip(self.pairs["ligand"], self.pairs["receptor"], strict=True))}
        types = pd.Index(self.cell_types)
        for row in focus.itertuples():
            i = where.get((row.ligand, row.receptor))
            if i is None:
                continue
            senders = np.ones(len(types), bool) if not row.senders else types.isin(row.senders)
            receivers = (np.ones(len(types), bool) if not row.receivers
                         else types.isin(row.receivers))
            mask[np.ix_(senders, receivers, [i])] = True
        return mask

    def long(self, units: tuple[np.ndarray, np.ndarray, np.ndarray], samples: Sequence[str],
             tissue: str) -> pd.DataFrame:
        """Per-sample values of ``units`` (sender, receiver, pair indices) for ``samples``
        (samples without expression data get no row: replicate_tests counts 0 cells)."""
        snd, rcv, pr = units
        s_pos = [self.samples.index(s) for s in samples if s in self.samples]
        names = [self.samples[i] for i in s_pos]
        n_units, n_samples = len(snd), len(s_pos)
        cells = self.pair_cells()
        sp = np.repeat(np.asarray(s_pos, dtype=int), n_units)
        u = np.tile(np.arange(n_units), n_samples)
        types = np.asarray(self.cell_types, dtype=object)
        return pd.DataFrame({
            "tissue": tissue,
            "sample": np.repeat(np.asarray(names, dtype=object), n_units),
            "sender": types[snd[u]], "receiver": types[rcv[u]],
            "ligand": self.pairs["ligand"].to_numpy()[pr[u]],
            "receptor": self.pairs["receptor"].to_numpy()[pr[u]],
            "n_cells": cells[sp, snd[u], rcv[u]].astype(int),
            "lr_means": self.lr_means[sp, snd[u], rcv[u], pr[u]],
            "lr_props": self.lr_props[sp, snd[u], rcv[u], pr[u]],
        })


def replicate_tests_batched(values: pd.DataFrame, cd: ContrastDesign, settings: ContrastSettings,
                            *, units: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """:func:`~mscflow.contrast.replicate_tests` of one contrast for many units at once.

    Units whose samples all pass the cell filter share the contrast's design, so with the
    OLS test their fits are one least-squares solve for all of them (same numbers as
    statsmodels, tested). Every other unit (a sample dropped, a design without test, a
    non-OLS test) goes through ``replicate_tests`` itself. One deliberate difference: values
    equal in every sample get ``no_test`` (statsmodels returns a rounding-noise standard
    error and a meaningless p-value there). No FDR column: the caller adds it per family.
    """
    design = cd.design
    units = list(units)
    part = values[values["tissue"] == cd.contrast.tissue]
    n_cells = part.pivot_table(index=units, columns="sample", values="n_cells",
                               aggfunc="first", observed=True)
    n_cells = n_cells.reindex(columns=design.index).fillna(0)
    all_kept = (n_cells >= settings.min_cells_per_sample).all(axis=1).to_numpy()
    fast = settings.score_test == "ols" and cd.note is None and all_kept.any()
    rows, slow_units = [], (n_cells.index[~all_kept] if fast else n_cells.index)
    if fast:

        X = design_matrix(design, cd.contrast.covariates).to_numpy(float)
        j = 1  # design_matrix: intercept, is_condition, covariates
        index = n_cells.index[all_kept]
        g = design["is_condition"].to_numpy() == 1
        base = {**cd.labels, "n_samples_condition": int(g.sum()),
                "n_samples_reference": int((~g).sum()), "test": settings.score_test,
                "covariates": cd.covariates}
        frame = pd.DataFrame(index=index).reset_index()
        frame["min_cells_per_sample"] = n_cells[all_kept].min(axis=1).astype(int).to_numpy()
        for metric in metrics:
            Y = part.pivot_table(index=units, columns="sample", values=metric,
                                 aggfunc="first", observed=True)
            Y = Y.reindex(index=index, columns=design.index).to_numpy(float).T
            res = _ols_many(X, Y, j)
            flat = ~res.pop("ok")
            for col in ("ci_low", "ci_high", "statistic", "pvalue"):
                res[col][flat] = np.nan
            rows.append(frame.assign(
                **base, metric=metric, mean_condition=Y[g].mean(axis=0),
                mean_reference=Y[~g].mean(axis=0), **res,
                status=np.where(flat, STATUS_NO_TEST, STATUS_TESTED),
                note=np.where(flat, CONSTANT_NOTE, "")))
    if len(slow_units):
        slow = part.set_index(units).loc[slow_units].reset_index()
        rows.append(replicate_tests(slow, [cd], settings, units=units, metrics=metrics,
                                    label_columns=units, exclude_columns=())
                    .drop(columns=["padj", "significant"]))
    columns = ["contrast", "tissue", "condition", "reference", *units, "metric",
               "n_samples_condition", "n_samples_reference", "min_cells_per_sample",
               "mean_condition", "mean_reference", "effect", "ci_low", "ci_high", "statistic",
               "df", "pvalue", "test", "covariates", "status", "note"]
    if not rows:
        return pd.DataFrame(columns=columns)
    return pd.concat(rows, ignore_index=True)[columns]


def _ols_many(X: np.ndarray, Y: np.ndarray, j: int) -> dict[str, np.ndarray]:
    """OLS of every column of ``Y`` on ``X``: coefficient ``j`` with its 95% CI, t, df and
    two-sided p (statsmodels' formulas); ``ok`` is False where the values do not vary
    (standard error at rounding level of the values, or not finite)."""
    from scipy import stats

    n, p = X.shape
    pinv = np.linalg.pinv(X)
    beta = pinv @ Y
    resid = Y - X @ beta
    df = n - p
    scale = (resid**2).sum(axis=0) / df
    cov_jj = (pinv @ pinv.T)[j, j]
    se = np.sqrt(scale * cov_jj)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = beta[j] / se
    level = np.maximum(np.abs(Y).max(axis=0), 1.0)
    ok = np.isfinite(se) & (se > 1e-10 * level)
    half = stats.t.ppf(0.975, df) * se
    return {"effect": beta[j], "ci_low": beta[j] - half, "ci_high": beta[j] + half,
            "statistic": t, "df": np.full(Y.shape[1], float(df)),
            "pvalue": 2 * stats.t.sf(np.abs(t), df), "ok": ok}


def _effective(contrast_settings: ContrastSettings, settings: CommunicationSettings
               ) -> ContrastSettings:
    """The contrast settings of these tests: a sample enters only when both cell types
    passed the communication stage's own cell filter too; no cell-type exclusion here
    (communication.exclude_cell_types already left those types out)."""
    return dataclasses.replace(
        contrast_settings, exclude_cell_types=(),
        min_cells_per_sample=max(contrast_settings.min_cells_per_sample, settings.min_cells))


def _contrast_units(data: TissueInteractions, cd: ContrastDesign, focus: pd.DataFrame,
                    st: ContrastSettings, expr_prop: float
                    ) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray, int]:
    """Units tested in one contrast: expressed in enough of its samples, or focus.
    Returns (unit indices, expressed-sample counts, focus flags, samples needed)."""
    samples = [s for s in cd.design.index if s in data.samples]
    pos = [data.samples.index(s) for s in samples]
    kept = data.pair_cells()[pos] >= st.min_cells_per_sample
    expressed = (data.lr_props[pos] >= expr_prop) & kept[..., None]
    n_expressed = expressed.sum(axis=0)
    n_c, n_r = int(cd.design["is_condition"].sum()), int((cd.design["is_condition"] == 0).sum())
    need = max(st.min_samples_per_group, min(n_c, n_r))
    focus_mask = data.unit_mask(focus)
    units = np.nonzero((n_expressed >= need) | focus_mask)
    return units, n_expressed[units], focus_mask[units], need


def interaction_tests(expression: pd.DataFrame, samples: pd.DataFrame | None,
                      contrasts: Sequence[Contrast], contrast_settings: ContrastSettings,
                      settings: CommunicationSettings, resource: pd.DataFrame,
                      focus: pd.DataFrame, cell_counts: pd.DataFrame | None = None
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Test every expressed interaction (and every focus pair) of every contrast.

    ``expression``: the per-sample expression tables of :mod:`mscflow.communication.sample`
    concatenated; ``samples``: the sample sheet (metadata, covariates); ``focus``: the
    ``pairs`` of :func:`~mscflow.communication.sample.resolve_focus`. Returns (tests, per-sample
    values of the focus units).
    """
    st = _effective(contrast_settings, settings)
    present = pd.DataFrame({"sample": sorted(expression["sample"].astype(str).unique())})
    if samples is None:
        present = expression[["sample", "tissue", "condition"]].drop_duplicates()
    designs = contrast_designs(present, samples, contrasts, st.min_samples_per_group)
    tissues: dict[str, TissueInteractions] = {}
    tables, focus_values = [], []
    for cd in designs:
        tissue = cd.contrast.tissue
        if tissue not in tissues:
            part = expression[expression["tissue"].astype(str) == tissue]
            counts = None if cell_counts is None else cell_counts[
                cell_counts["tissue"].astype(str) == tissue]
            tissues[tissue] = TissueInteractions.build(part, resource, counts)
        data = tissues[tissue]
        if not data.cell_types or data.pairs.empty:
            log.warning("%s: no expression data of tissue %r; nothing to test",
                        cd.contrast.name, tissue)
            continue
        table, values = _contrast_table(data, cd, focus, st, settings.expr_prop)
        tables.append(table)
        focus_values.append(values)
    if not tables:
        return _empty_tests(), pd.DataFrame()
    table = pd.concat(tables, ignore_index=True)
    table = _label_focus(table, focus)
    table = add_fdr(table, ["contrast", "metric", "fdr_family"], st.fdr)
    per_sample = pd.concat(focus_values, ignore_index=True)
    per_sample["expressed"] = per_sample["lr_props"] >= settings.expr_prop
    return _order(table, contrasts, focus), per_sample


def _contrast_table(data: TissueInteractions, cd: ContrastDesign, focus: pd.DataFrame,
                    st: ContrastSettings, expr_prop: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tests of one contrast (no FDR yet) and the per-sample values of its focus units."""
    units, n_expr, is_focus, need = _contrast_units(data, cd, focus, st, expr_prop)
    values = data.long(units, list(cd.design.index), cd.contrast.tissue)
    table = replicate_tests_batched(values, cd, st, units=KEYS, metrics=METRICS)
    types = np.asarray(data.cell_types, dtype=object)
    unit_info = pd.DataFrame({
        "sender": types[units[0]], "receiver": types[units[1]],
        "ligand": data.pairs["ligand"].to_numpy()[units[2]],
        "receptor": data.pairs["receptor"].to_numpy()[units[2]],
        "n_samples_expressed": n_expr, "is_focus": is_focus})
    table = _mark_constant(table.merge(unit_info, on=KEYS, how="left"))
    if cd.note is None:
        table = _mark_unexpressed(table, need, expr_prop)
    focus_units = values.merge(unit_info[unit_info["is_focus"]][KEYS], on=KEYS)
    log.info("%s: %d interactions (%d focus units) expressed in >= %d samples or focus",
             cd.contrast.name, len(unit_info), int(is_focus.sum()), need)
    return table, focus_units.assign(contrast=cd.contrast.name)


def _empty_tests() -> pd.DataFrame:
    cols = ["contrast", "tissue", "condition", "reference", "fdr_family", *KEYS, "metric",
            "focus_axis", "effect", "ci_low", "ci_high", "pvalue", "padj", "significant",
            "status", "note", "response_set"]
    return pd.DataFrame(columns=cols)


def _mark_constant(table: pd.DataFrame) -> pd.DataFrame:
    """Rows whose per-sample values are all equal (e.g. every cell detects both sides in
    every sample): the OLS standard error is then rounding noise, not a test."""
    width = table["ci_high"] - table["ci_low"]
    level = np.maximum(table["mean_condition"].abs(), table["mean_reference"].abs())
    flat = (table["status"] == STATUS_TESTED) & (width <= 1e-9 * np.maximum(level, 1.0))
    table.loc[flat, ["ci_low", "ci_high", "statistic", "df", "pvalue"]] = np.nan
    table.loc[flat, "status"] = STATUS_NO_TEST
    table.loc[flat, "note"] = CONSTANT_NOTE
    return table


def _mark_unexpressed(table: pd.DataFrame, need: int, expr_prop: float) -> pd.DataFrame:
    """Focus units below the expression filter (of a testable design): reported, not
    tested."""
    low = (table["n_samples_expressed"] < need) & (table["status"] != STATUS_SKIPPED)
    note = (f"expressed (both sides in >= {expr_prop:g} of cells) in "
            + table.loc[low, "n_samples_expressed"].astype(int).astype(str)
            + f" sample(s); need >= {need}: not tested")
    table.loc[low, ["ci_low", "ci_high", "statistic", "df", "pvalue"]] = np.nan
    table.loc[low, "status"] = STATUS_SKIPPED
    table.loc[low, "note"] = note
    return table


def _label_focus(table: pd.DataFrame, focus: pd.DataFrame) -> pd.DataFrame:
    """``focus_axis`` (empty for the rest), ``response_set`` and ``fdr_family``."""
    labels = focus[["ligand", "receptor", "focus_axis", "response_set"]]
    table = table.merge(labels, on=["ligand", "receptor"], how="left")
    table.loc[~table["is_focus"].astype(bool), ["focus_axis", "response_set"]] = ""
    table[["focus_axis", "response_set"]] = table[["focus_axis", "response_set"]].fillna("")
    table["fdr_family"] = np.where(table["is_focus"].astype(bool), FAMILY_FOCUS,
                                   FAMILY_EXPLORATORY)
    return table.drop(columns="is_focus")


def _order(table: pd.DataFrame, contrasts: Sequence[Contrast], focus: pd.DataFrame
           ) -> pd.DataFrame:
    """Contrast order of the config; focus rows first (axis order), then by p-value."""
    contrast_rank = {c.name: i for i, c in enumerate(contrasts)}
    axis_rank = {a: i for i, a in enumerate(pd.unique(focus["focus_axis"]))}
    keys = pd.DataFrame({
        "c": table["contrast"].map(contrast_rank),
        "f": (table["fdr_family"] != FAMILY_FOCUS).astype(int),
        "a": table["focus_axis"].map(axis_rank).fillna(len(axis_rank)),
        "m": table["metric"].map({m: i for i, m in enumerate(METRICS)}),
        "p": table["pvalue"].fillna(2.0),
    })
    order = pd.concat([keys, table[KEYS]], axis=1).sort_values(
        ["c", "f", "a", "m", "p", *KEYS], kind="mergesort").index
    front = ["contrast", "tissue", "condition", "reference", "fdr_family", *KEYS, "metric",
             "focus_axis"]
    cols = front + [c for c in table.columns if c not in front]
    return table.loc[order, cols].reset_index(drop=True)


def add_response(table: pd.DataFrame, score_shifts: pd.DataFrame | None) -> pd.DataFrame:
    """Beside each interaction of an axis with a ``response_set``: the receiver's score
    shift of that set in the same contrast (metric ``mean``): effect, 95% CI, padj and
    status. Other rows get empty response columns."""
    out = table.copy()
    wanted = out["response_set"].astype(str) != ""
    for col in RESPONSE_COLUMNS[1:]:
        out[col] = np.nan if col != "response_status" else ""
    if score_shifts is None or not wanted.any() or score_shifts.empty:
        return out[[c for c in out.columns if c not in RESPONSE_COLUMNS] + RESPONSE_COLUMNS]
    shifts = score_shifts[score_shifts["metric"] == "mean"].rename(columns={
        "cell_type": "receiver", "gene_set": "response_set", "effect": "response_effect",
        "ci_low": "response_ci_low", "ci_high": "response_ci_high", "padj": "response_padj",
        "status": "response_status"})
    shifts = shifts[["contrast", "receiver", "response_set", *RESPONSE_COLUMNS[1:]]]
    joined = out.loc[wanted, ["contrast", "receiver", "response_set"]].merge(
        shifts, on=["contrast", "receiver", "response_set"], how="left")
    for col in RESPONSE_COLUMNS[1:]:
        out.loc[wanted, col] = joined[col].to_numpy()
    out["response_status"] = out["response_status"].fillna("")
    return out[[c for c in out.columns if c not in RESPONSE_COLUMNS] + RESPONSE_COLUMNS]


def _absent_cell_type(axis: str, role: str, cell_type: str, tissue: str,
                      by_tissue: Mapping[str, set]) -> dict:
    """The skipped row of a focus sender/receiver without cells in ``tissue``."""
    import difflib

    elsewhere = sorted(t for t, present in by_tissue.items() if cell_type in present)
    if elsewhere:
        where = f"it has cells in {elsewhere}"
    else:
        known = sorted(set().union(*by_tissue.values()))
        hint = difflib.get_close_matches(cell_type, known, n=1)
        where = "no tissue of the run has it" + (f"; did you mean {hint[0]!r}?" if hint else "")
    return {"kind": "focus_cell_type", "tissue": tissue, "sample": "", "cell_type": cell_type,
            "n_cells": 0, "focus_axis": axis,
            "reason": f"{role} cell type {cell_type!r} of focus axis {axis!r} has no cells in "
            f"tissue {tissue!r} ({where}; cell types there: {sorted(by_tissue[tissue])}); "
            "the axis is reported for the cell types present"}


def focus_problems_in_tissues(focus: pd.DataFrame, cell_types_by_tissue: Mapping[str, set],
                              score_sets: set[str] | None) -> pd.DataFrame:
    """Focus senders/receivers without cells in a tissue, and response sets the score
    shifts lack: listed, the rest of the stage runs."""
    rows = []
    for axis in focus.drop_duplicates("focus_axis").itertuples():
        for role, listed in (("sender", axis.senders), ("receiver", axis.receivers)):
            for cell_type in listed:
                rows += [_absent_cell_type(axis.focus_axis, role, cell_type, tissue,
                                           cell_types_by_tissue)
                         for tissue, present in sorted(cell_types_by_tissue.items())
                         if cell_type not in present]
        if axis.response_set and score_sets is not None and axis.response_set not in score_sets:
            rows.append({"kind": "focus_response", "tissue": "", "sample": "", "cell_type": "",
                         "n_cells": np.nan, "focus_axis": axis.focus_axis,
                         "reason": f"response set {axis.response_set!r} is not in the score "
                         f"shifts (sets there: {sorted(score_sets)}); no response column"})
    for row in rows:
        log.warning("communication focus: %s", row["reason"])
    return pd.DataFrame(rows, columns=SKIPPED_COLUMNS)


def communication_contrast_stage(expression: Sequence[str | Path], skipped: Sequence[str | Path],
                                 sample_sheet: str | Path, contrasts: Sequence[Mapping],
                                 contrast_settings: Mapping, settings: Mapping, *,
                                 species: str, seed: int, score_shifts: str | Path | None
                                 ) -> dict[str, pd.DataFrame]:
    """Rule communication_contrasts: outputs ``tsv``/``parquet`` (every test),
    ``focus`` (the focus rows), ``focus_per_sample`` (their per-sample values),
    ``skipped`` (every (sample, cell type), sample, focus gene, pair or cell type left
    out, with the reason), ``cell_types`` (:func:`cell_type_usage`) and ``focus_pairs``
    (:func:`focus_pair_table`)."""

    st = CommunicationSettings.from_config(settings, seed=seed)
    sheet = read_sample_sheet(sample_sheet)
    parsed = parse_contrasts(contrasts, sheet)
    cst = ContrastSettings.from_config(contrast_settings)
    resource_name = st.resource_for(species)
    resource = load_resource(resource_name)
    expr = pd.concat([pd.read_parquet(p) for p in expression], ignore_index=True)
    left_out = pd.concat([pd.read_csv(p, sep="\t", dtype={"sample": str, "tissue": str})
                          for p in skipped], ignore_index=True)
    left_out = left_out.reindex(columns=SKIPPED_COLUMNS)
    resolved: FocusPairs = resolve_focus(st.axes, resource, resource_name,
                                         genes=expr["gene"].unique())
    shifts = pd.read_parquet(score_shifts) if score_shifts else None
    counts = left_out[left_out["kind"] == "cell_type"].dropna(subset=["n_cells"])
    by_tissue = {t: set(g["cell_type"].astype(str)) for t, g in
                 pd.concat([expr[["tissue", "cell_type"]], counts[["tissue", "cell_type"]]])
                 .groupby("tissue")}
    score_sets = None if shifts is None else set(shifts["gene_set"].astype(str))
    problems = focus_problems_in_tissues(resolved.pairs, by_tissue, score_sets)
    with job.timed("interaction tests"):
        table, focus_values = interaction_tests(expr, sheet, parsed, cst, st, resource,
                                                resolved.pairs, cell_counts=counts)
    table = add_response(table, shifts)
    for (name, status), n in table.groupby(["contrast", "status"]).size().items():
        log.info("%s: %d rows %s", name, n, status)
    focus_problems = pd.concat([resolved.problems, problems], ignore_index=True)
    focus_rows = table[table["fdr_family"] == FAMILY_FOCUS].reset_index(drop=True)
    return {"tsv": table, "parquet": table, "focus": focus_rows,
            "focus_per_sample": focus_values,
            "skipped": pd.concat([left_out, focus_problems], ignore_index=True),
            "cell_types": cell_type_usage(expr, left_out),
            "focus_pairs": focus_pair_table(resolved.pairs, focus_problems)}


def cell_type_usage(expression: pd.DataFrame, left_out: pd.DataFrame) -> pd.DataFrame:
    """Every (tissue, sample, cell type) of the stage: cells, whether liana and the tests
    used it, and why not (also samples without cells or usable cell types)."""
    used = expression[["tissue", "sample", "cell_type", "n_cells"]].drop_duplicates()
    used = used.assign(used=True, reason="")
    dropped = left_out[left_out["kind"].isin(["cell_type", "sample"])]
    dropped = dropped[["tissue", "sample", "cell_type", "n_cells", "reason"]].assign(used=False)
    table = pd.concat([used, dropped], ignore_index=True)
    table = table.sort_values(["tissue", "sample", "cell_type"], kind="mergesort")
    return table[["tissue", "sample", "cell_type", "n_cells", "used", "reason"]].reset_index(
        drop=True)


def focus_pair_table(pairs: pd.DataFrame, problems: pd.DataFrame) -> pd.DataFrame:
    """The focus axes as resolved: each pair used (resource spelling, sender/receiver
    restrictions, response set) and each problem of an axis, with its reason."""
    used = pairs.assign(status="used", reason="",
                        senders=pairs["senders"].map(", ".join),
                        receivers=pairs["receivers"].map(", ".join))
    bad = problems.rename(columns={"kind": "status"})[["focus_axis", "status", "reason"]]
    cols = ["focus_axis", "ligand", "receptor", "senders", "receivers", "response_set",
            "status", "reason"]
    return pd.concat([used, bad], ignore_index=True).reindex(columns=cols).fillna("")
