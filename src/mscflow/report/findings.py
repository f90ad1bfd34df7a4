"""Findings in words: the calls of every contrast table, as sentences built from the tables.

The input is the registry of replicate-aware result tables (``{analysis: table}``, the
``CONTRAST_TABLES`` of the workflow). A table is read by its columns, not by its name
(:mod:`mscflow.report.tables`):

* replicate tests (:func:`mscflow.contrast.replicate_tests`: ``contrast, tissue, condition,
  reference, <unit columns>, metric, ... effect, ci_low, ci_high, ... padj, significant,
  status, note``): the unit columns are those between ``reference`` and ``metric``, so a
  new stage (communication, trajectories) appears without a change here;
* composition (no ``metric``, an ``effect_scale``): the same, one metric per row;
* pseudobulk DE (``gene``, ``log2FoldChange``) and GSEA (``nes``): counted / listed briefly;
* anything else is named as not summarised.

Every number on the page is a ``<span class="num">`` that names the table, row and column
it comes from (``data-table``, ``data-row``, ``data-col``), or how it was derived from
named rows (``data-derived``: ``fold2``, ``mde``, ``count``, ``min``, ``max``, ``median``),
or the config key it comes from (``data-key``). ``tests/test_findings.py`` checks each
against the tables, and that no digit appears outside those spans and names.

The page names a unit (e.g. a cell type x programme) when the table's primary metric (the
first it lists: the mean score, ``lr_means``, ``median_pseudotime``) is called for it with an
absolute effect of at least ``report.findings_min_effect`` for that metric; the unit's
other called metrics join its sentence. Units called only on a secondary metric, or by a
smaller change, are counted under the list; ``findings.tsv`` lists every call (``named``).

Where a family has no call, the page gives the smallest effect the data could have
detected: :func:`minimum_detectable_effect` at 80 % power (``report.findings_power``) for
the two-sided t test of the row (its standard error from the 95 % CI, its residual df) at
the significance ``FDR / m`` that Benjamini-Hochberg requires of the best of ``m`` tests
(nothing was called, so the smallest p-value did not reach it). Rows without a t-based
CI (the rank test) have none.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mscflow.contrast.stats import STATUS_NO_TEST, STATUS_SKIPPED, STATUS_TESTED
from mscflow.report.findings_plots import figure_png, overview_heatmap
from mscflow.report.tables import (
    METRIC_LABELS,
    REPLICATE_COLUMNS,
    ResultTable,
    minimum_detectable_effect,
    read_result_tables,
    result_table,
    row_mde,
    standard_error_from_ci,
)

__all__ = [
    "REPLICATE_COLUMNS",
    "ResultTable",
    "findings_html",
    "findings_records",
    "findings_stage",
    "minimum_detectable_effect",
    "named_calls",
    "primary_metric",
    "read_result_tables",
    "result_table",
    "standard_error_from_ci",
]

# Sentences per analysis and contrast, strongest first; the rest are counted (findings.tsv
# lists every call).
MAX_UNITS_SHOWN = 100

# How the page names known analyses and metrics; anything else is named by its key.
ANALYSIS_TITLES = {
    "score_shifts": "Programme scores",
    "composition": "Cell-type composition",
    "communication": "Cell-cell communication",
    "trajectory": "Trajectories",
    "pseudobulk_de": "Pseudobulk differential expression",
    "gsea": "Gene-set enrichment (GSEA prerank)",
}


# ------------------------------------------------------------------------ numbers


def format_number(value: float, digits: int = 3, signed: bool = False) -> str:
    """``value`` to ``digits`` significant digits (``+`` before positives when signed)."""
    if not np.isfinite(value):
        return "NA"
    text = f"{value:.{digits}g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return f"+{text}" if signed and value > 0 else text


def _attr(value: object) -> str:
    return html.escape(str(value), quote=True)


class Page:
    """Builds the HTML of one table's findings: numbers with their provenance."""

    def __init__(self, rt: ResultTable):
        self.rt = rt

    def num(self, row: int, col: str, *, digits: int = 3, signed: bool = False) -> str:
        """A number read from ``row``/``col`` of the table."""
        value = self.rt.table.at[row, col]
        return (f"<span class='num' data-table='{_attr(self.rt.analysis)}' data-row='{row}' "
                f"data-col='{_attr(col)}' data-value='{_attr(repr(float(value)))}'>"
                f"{format_number(float(value), digits, signed)}</span>")

    def derived(self, kind: str, rows: Sequence[int], value: float, *, col: str = "",
                digits: int = 3, extra: Mapping[str, object] | None = None) -> str:
        """A number derived from table rows (``kind``: fold2, mde of one row; count, min, max,
        median over the rows that ``extra`` names by a filter and their family)."""
        attrs = "".join(f" data-{k}='{_attr(v)}'" for k, v in (extra or {}).items())
        if kind in ("fold2", "mde"):
            attrs += f" data-rows='{_attr(json.dumps([int(r) for r in rows]))}'"
        text = str(int(value)) if kind == "count" else format_number(value, digits)
        return (f"<span class='num' data-table='{_attr(self.rt.analysis)}' "
                f"data-derived='{kind}' data-col='{_attr(col)}'{attrs} "
                f"data-value='{_attr(repr(float(value)))}'>{text}</span>")


def config_number(key: str, value: float, text: str) -> str:
    """A number taken from the run's configuration."""
    return (f"<span class='num' data-key='{_attr(key)}' data-value='{_attr(repr(value))}'>"
            f"{html.escape(text)}</span>")


def name(text: object) -> str:
    """A name from the tables (cell type, gene set, condition), shown as is."""
    return f"<span class='name'>{html.escape(str(text))}</span>"


CI_TEXT = "<span class='const' data-const='ci_level'>95 %</span> CI"


def _fdr(settings: FindingSettings) -> str:
    return config_number("contrast_settings.fdr", settings.fdr, format_number(settings.fdr))


# ------------------------------------------------------------------------ sentences


@dataclass(frozen=True)
class FindingSettings:
    """What the sentences need beyond the tables: the FDR of the calls, the power of the
    detectable-effect estimate, and the smallest absolute effect per metric that the page
    names (``report.findings_min_effect``; metrics not listed have none)."""

    fdr: float = 0.05
    power: float = 0.8
    min_effect: Mapping[str, float] = field(default_factory=dict)


def primary_metric(rt: ResultTable) -> str:
    """The table's primary metric: the first it lists (``mean`` score, ``lr_means``,
    ``median_pseudotime``; composition has one)."""
    return str(rt.table[rt.metric_column].iloc[0])


def _naming_rule(rt: ResultTable, settings: FindingSettings) -> tuple[str, float]:
    """The primary metric and the smallest absolute effect on it that names a unit."""
    primary = primary_metric(rt)
    return primary, float(settings.min_effect.get(primary, 0.0))


def _unit_keys(frame: pd.DataFrame, keys: Sequence[str]) -> pd.Index:
    """One hashable key per row from the ``keys`` columns (as text)."""
    return pd.MultiIndex.from_frame(frame[list(keys)].astype(str))


def named_calls(rt: ResultTable, called: pd.DataFrame, settings: FindingSettings
                ) -> pd.DataFrame:
    """The calls the page names: every called row of a unit whose primary metric is called
    with an absolute effect of at least its ``min_effect``. A unit called only on another
    metric, or by less than that, is counted, not named (findings.tsv lists it)."""
    primary, floor = _naming_rule(rt, settings)
    keys = ["contrast", *rt.units]
    lead = called[(called[rt.metric_column].astype(str) == primary)
                  & (called["effect"].abs() >= floor)]
    return called[_unit_keys(called, keys).isin(_unit_keys(lead, keys))]


def _unit_text(rt: ResultTable, unit: Mapping[str, object], inner: Sequence[str]) -> str:
    """The unit named by its ``inner`` columns (the group's column is in the heading)."""
    if rt.units == ("cell_type", "gene_set") and list(inner) == ["gene_set"]:
        return f"the {name(unit['gene_set'])} programme"
    if list(inner) == ["cell_type"]:
        return name(unit["cell_type"])
    return ", ".join(f"{html.escape(c.replace('_', ' '))} {name(unit[c])}" for c in inner
                     if str(unit[c]) != "")


def _direction_words(rt: ResultTable, effect: float) -> str:
    up = effect > 0
    if rt.metric_column == "effect_scale":
        return "was more abundant" if up else "was less abundant"
    return "rose" if up else "fell"


def _metric_label(metric: object) -> str:
    """The metric's name as the page shows it (a name span: it may hold digits, log2)."""
    label = METRIC_LABELS.get(str(metric), str(metric).replace("_", " "))
    return f"<span class='name' data-metric='{_attr(metric)}'>{html.escape(label)}</span>"


def _call_text(page: Page, row: int) -> str:
    rt = page.rt
    r = rt.table.loc[row]
    text = (f"{_metric_label(r[rt.metric_column])} "
            f"{page.num(row, 'effect', signed=True)}")
    if rt.metric_column == "effect_scale" and str(r["effect_scale"]).startswith("log2"):
        text += f" (a {page.derived('fold2', [row], 2.0 ** r['effect'], col='effect')}-fold change)"
    if np.isfinite(r["ci_low"]):
        text += (f", {CI_TEXT} {page.num(row, 'ci_low', signed=True)} to "
                 f"{page.num(row, 'ci_high', signed=True)}")
    text += f", FDR {page.num(row, 'padj', digits=2)}"
    return f"<span class='call' data-metric='{_attr(r[rt.metric_column])}'>{text}</span>"


def _samples_text(page: Page, row: int) -> str:
    t = page.rt.table
    return (f"{page.num(row, 'n_samples_condition', digits=6)} {name(t.at[row, 'condition'])}"
            f" vs {page.num(row, 'n_samples_reference', digits=6)} "
            f"{name(t.at[row, 'reference'])} samples")


def _same_samples(t: pd.DataFrame, a: int, b: int) -> bool:
    cols = ["n_samples_condition", "n_samples_reference"]
    return bool((t.loc[a, cols] == t.loc[b, cols]).all())


def _unit_sentence(page: Page, unit: Mapping[str, object], rows: list[int],
                   inner: Sequence[str], group_row: int | None) -> str:
    """One sentence for one unit's calls (one or more metrics). Samples per group are
    given unless the group heading (``group_row``) already gives the same numbers."""
    rt = page.rt
    t = rt.table
    effects = t.loc[rows, "effect"]
    direction = "up" if (effects > 0).all() else "down" if (effects < 0).all() else "mixed"
    verb = (_direction_words(rt, float(effects.iloc[0])) if direction != "mixed"
            else "changed in opposite directions by metric")
    first = rows[0]
    calls = "; ".join(_call_text(page, r) for r in rows)
    samples = ("" if group_row is not None and _same_samples(t, first, group_row)
               else f" ({_samples_text(page, first)})")
    metrics = json.dumps([str(t.at[r, rt.metric_column]) for r in rows])
    attrs = (f" data-analysis='{_attr(rt.analysis)}'"
             f" data-contrast='{_attr(t.at[first, 'contrast'])}'"
             f" data-tissue='{_attr(t.at[first, 'tissue'])}'"
             f" data-unit='{_attr(json.dumps({k: str(v) for k, v in unit.items()}))}'"
             f" data-direction='{direction}' data-metrics='{_attr(metrics)}'")
    subject = _unit_text(rt, unit, inner)
    return f"<li class='finding'{attrs}>{subject} {verb}: {calls}{samples}.</li>"


def _further_note(page: Page, all_called: pd.DataFrame, shown: pd.DataFrame,
                  settings: FindingSettings) -> str:
    """How many called units the list leaves out, and the rule that names units."""
    rt = page.rt
    keys = list(rt.units)
    units = all_called.drop_duplicates(keys)
    rest = units.index[~_unit_keys(units, keys).isin(_unit_keys(shown, keys))].tolist()
    if not rest:
        return ""
    primary, floor = _naming_rule(rt, settings)
    rule = f"a unit is named when its {_metric_label(primary)} is called"
    if floor > 0:
        rule += (" with an absolute change of at least "
                 + config_number(f"report.findings_min_effect.{primary}", floor,
                                 format_number(floor)))
    extra = {"filter": "further_units", "contrast": all_called["contrast"].iloc[0],
             "units": json.dumps(keys)}
    return (f"<p class='note'>{page.derived('count', rest, len(rest), extra=extra)} "
            f"further units with calls are not written out here ({rule}, strongest first); "
            "results/findings.tsv lists every call.</p>")


def _call_list(page: Page, called: pd.DataFrame, all_called: pd.DataFrame,
               settings: FindingSettings) -> str:
    """The named calls of one contrast (:func:`named_calls`): one sentence per unit,
    strongest first (at most :data:`MAX_UNITS_SHOWN`), the other called units counted; with
    two or more unit columns, grouped by the first one that no row of the contrast leaves
    empty (e.g. per cell type), groups strongest first."""
    rt = page.rt
    keys = list(rt.units)
    called = called.assign(_best=called.groupby(keys)["padj"].transform("min"))
    called = called.sort_values(["_best", *keys, "padj"], kind="mergesort")
    units = called.drop_duplicates(keys)
    if len(units) > MAX_UNITS_SHOWN:
        keep = called[keys].apply(tuple, axis=1).isin(
            set(units.loc[units.index[:MAX_UNITS_SHOWN], keys].apply(tuple, axis=1)))
        called = called[keep]
    further = _further_note(page, all_called, called, settings)
    if called.empty:
        return further

    def sentences(part: pd.DataFrame, inner: Sequence[str], group_row: int | None) -> str:
        out = []
        for unit, sub in part.groupby(keys, sort=False):
            unit = dict(zip(keys, unit if isinstance(unit, tuple) else (unit,), strict=True))
            out.append(_unit_sentence(page, unit, sub.index.tolist(), inner, group_row))
        return "".join(out)

    whole = rt.table[rt.table["contrast"] == called["contrast"].iloc[0]]
    outer = next((k for k in keys if (whole[k].astype(str) != "").all()), None)
    if len(keys) < 2 or outer is None:
        return f"<ul class='findings'>{sentences(called, keys, None)}</ul>{further}"
    inner = [k for k in keys if k != outer]
    groups = []
    for value, part in called.groupby(outer, sort=False):
        first = part.index[0]
        heading = (f"In {name(value)} ({_samples_text(page, first)}):" if outer == "cell_type"
                   else f"{html.escape(outer.replace('_', ' ').capitalize())} {name(value)} "
                        f"({_samples_text(page, first)}):")
        groups.append(f"<li class='group'>{heading}<ul>{sentences(part, inner, first)}</ul></li>")
    return f"<ul class='groups'>{''.join(groups)}</ul>{further}"


def _span_range(page: Page, col: str, values: pd.Series, extra: Mapping[str, object],
                digits: int = 6) -> str:
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:
        return page.derived("min", [], lo, col=col, digits=digits, extra=extra)
    return (f"{page.derived('min', [], lo, col=col, digits=digits, extra=extra)}&ndash;"
            f"{page.derived('max', [], hi, col=col, digits=digits, extra=extra)}")


def _family_attrs(rt: ResultTable, fam: pd.DataFrame) -> dict[str, object]:
    """The columns naming a Benjamini-Hochberg family, for the spans that count in it."""
    return {"contrast": fam["contrast"].iloc[0], "metric": fam[rt.metric_column].iloc[0],
            **{c: fam[c].iloc[0] for c in rt.family[1:]}}


def _family_summary(page: Page, fam: pd.DataFrame, settings: FindingSettings) -> str:
    """Counts of a (contrast, metric) family: tested, called, skipped, not testable."""
    rt = page.rt
    tested = fam.index[fam["status"] == STATUS_TESTED].tolist()
    called = fam.index[fam["significant"].astype(bool) & (fam["status"] == STATUS_TESTED)].tolist()
    skipped = fam.index[fam["status"] == STATUS_SKIPPED].tolist()
    no_test = fam.index[fam["status"] == STATUS_NO_TEST].tolist()
    metric = fam[rt.metric_column].iloc[0]
    family = _family_attrs(rt, fam)

    def count(rows: list[int], what: str) -> str:
        return page.derived("count", rows, len(rows), extra={"filter": what, **family})

    label = _metric_label(metric) + "".join(
        f" ({html.escape(c.replace('_', ' '))} {name(fam[c].iloc[0])})" for c in rt.family[1:])
    parts = [f"{label}: {count(called, 'significant')} of "
             f"{count(tested, 'tested')} tests "
             f"called at FDR {_fdr(settings)}"]
    if skipped:
        parts.append(f"{count(skipped, 'skipped')} skipped (too few cells or samples)")
    if no_test:
        parts.append(f"{count(no_test, 'no_test')} not testable with this design")
    return "; ".join(parts)


def _null_text(page: Page, fam: pd.DataFrame, settings: FindingSettings) -> str:
    """What a family without calls could have detected (see the module docstring)."""
    rt = page.rt
    tested = fam[fam["status"] == STATUS_TESTED]
    if tested.empty:
        return "No unit could be tested in this family."
    first = tested.index[0]
    alpha = settings.fdr / len(tested)
    mde = tested.apply(lambda r: row_mde(r, alpha, settings.power), axis=1)
    over = {"filter": "tested", **_family_attrs(rt, fam)}
    samples = (f"{_span_range(page, 'n_samples_condition', tested['n_samples_condition'], over)}"
               f" {name(tested.at[first, 'condition'])} vs "
               f"{_span_range(page, 'n_samples_reference', tested['n_samples_reference'], over)}"
               f" {name(tested.at[first, 'reference'])} samples")
    text = f"Nothing was called ({samples} per unit)."
    ok = mde[np.isfinite(mde)]
    if ok.empty:
        return text + (" No detectable effect can be given: the rows have no t-based "
                       "confidence interval (e.g. the rank test).")
    extra = {**over, "alpha": repr(alpha), "power": repr(settings.power)}
    power = config_number("report.findings_power", settings.power,
                          f"{format_number(100 * settings.power)} %")
    stat = {k: page.derived(k, [], float(getattr(ok, k)()), col="mde", extra=extra)
            for k in ("median", "min", "max")}
    return text + (f" With the observed between-sample variance, an effect would have had to "
                   f"be at least {stat['median']} (median over the tested units; range "
                   f"{stat['min']} to {stat['max']}) to be called with {power} power, if it "
                   "were the only real effect among these tests (Benjamini-Hochberg then needs "
                   "p &le; FDR / number of tests).")


def _replicate_section(rt: ResultTable, contrast: str, settings: FindingSettings) -> str:
    page = Page(rt)
    t = rt.table
    part = t[t["contrast"] == contrast]
    blocks = []
    for _, fam in part.groupby(rt.family, sort=False):
        summary = _family_summary(page, fam, settings)
        calls = fam[fam["significant"].astype(bool) & (fam["status"] == STATUS_TESTED)]
        null = "" if len(calls) else f"<p class='null'>{_null_text(page, fam, settings)}</p>"
        blocks.append(f"<p class='summary'>{summary}.</p>{null}")
    called = part[part["significant"].astype(bool) & (part["status"] == STATUS_TESTED)]
    if called.empty:
        return "".join(blocks)
    return "".join(blocks) + _call_list(page, named_calls(rt, called, settings), called,
                                        settings)


def _de_section(rt: ResultTable, contrast: str, settings: FindingSettings) -> str:
    page = Page(rt)
    part = rt.table[rt.table["contrast"] == contrast]
    called = (part["significant"].astype(bool) if "significant" in part
              else part["padj"] < settings.fdr)
    sig = part[(part["status"] == STATUS_TESTED) & called]
    lines = []
    for cell_type in sorted(part["cell_type"].astype(str).unique()):
        hits = sig[sig["cell_type"].astype(str) == cell_type]
        up = hits.index[hits["log2FoldChange"] > 0].tolist()
        down = hits.index[hits["log2FoldChange"] < 0].tolist()
        if not len(hits):
            continue
        top = hits.sort_values("padj", kind="mergesort").head(5).index
        genes = ", ".join(f"{name(rt.table.at[r, 'gene'])} "
                          f"({page.num(r, 'log2FoldChange', signed=True)})" for r in top)
        extra = {"contrast": contrast, "cell_type": cell_type}
        up_n = page.derived("count", up, len(up), extra={"filter": "de_up", **extra})
        down_n = page.derived("count", down, len(down), extra={"filter": "de_down", **extra})
        lines.append(
            f"<li class='de' data-contrast='{_attr(contrast)}' data-cell-type='{_attr(cell_type)}'>"
            f"{name(cell_type)}: {up_n} genes up, {down_n} down at this FDR; strongest "
            f"({name('log2FoldChange')}): {genes}.</li>")
    if not lines:
        return "<p class='null'>No gene was called in any cell type.</p>"
    return "<ul class='de'>" + "".join(lines) + "</ul>"


def _gsea_section(rt: ResultTable, contrast: str, settings: FindingSettings) -> str:
    page = Page(rt)
    part = rt.table[rt.table["contrast"] == contrast]
    sig = part[part["significant"].astype(bool)].sort_values("fdr", kind="mergesort")
    if sig.empty:
        return "<p class='null'>No programme set was enriched at this FDR.</p>"
    items = "".join(
        f"<li class='gsea' data-contrast='{_attr(contrast)}'>{name(sig.at[r, 'cell_type'])}: "
        f"{name(sig.at[r, 'gene_set'])} among genes "
        f"{'up' if sig.at[r, 'nes'] > 0 else 'down'} (NES {page.num(r, 'nes', signed=True)}, "
        f"FDR {page.num(r, 'fdr', digits=2)}).</li>" for r in sig.index)
    return f"<ul class='gsea'>{items}</ul>"


SECTIONS: dict[str, Callable[[ResultTable, str, FindingSettings], str]] = {
    "replicate": _replicate_section, "de": _de_section, "gsea": _gsea_section,
}


# -------------------------------------------------------------------------- the page


def _contrasts(tables: Sequence[ResultTable]) -> list[tuple[str, pd.Series]]:
    """Contrasts in the order the tables list them, with their labels."""
    seen: dict[str, pd.Series] = {}
    for rt in tables:
        if rt.kind == "unknown" or "contrast" not in rt.table:
            continue
        for _, row in rt.table.drop_duplicates("contrast").iterrows():
            seen.setdefault(str(row["contrast"]), row)
    return list(seen.items())


def _headline(tables: Sequence[ResultTable], contrast: str) -> str:
    """Counts of calls per analysis for the top of a contrast."""
    parts = []
    for rt in tables:
        if rt.kind != "replicate":
            continue
        part = rt.table[(rt.table["contrast"] == contrast) & (rt.table["status"] == STATUS_TESTED)]
        if part.empty:
            continue
        called = part[part["significant"].astype(bool)]
        called_units = called.drop_duplicates(list(rt.units))
        page = Page(rt)
        extra = {"filter": "called_units", "contrast": contrast,
                 "units": json.dumps(list(rt.units))}
        units = " &times; ".join(html.escape(c.replace("_", " ")) for c in rt.units)
        n = page.derived("count", called_units.index.tolist(), len(called_units), extra=extra)
        parts.append(f"{html.escape(ANALYSIS_TITLES.get(rt.analysis, rt.analysis))}: {n} "
                     f"called ({units})")
    return "; ".join(parts)


_CSS = """
body { font-family: 'DejaVu Sans', Arial, sans-serif; font-size: 14px; color: #1e293b;
       margin: 1.5em; line-height: 1.45; max-width: 70em; }
h1 { font-size: 21px; } h2 { font-size: 17px; margin-top: 1.8em; border-bottom: 1px solid #cbd5e1; }
h3 { font-size: 14px; margin: 1.2em 0 0.3em; }
p.lead, p.summary, p.null, p.note { max-width: 62em; } p.summary { color: #334155; }
p.null { background: #f8fafc; border-left: 3px solid #94a3b8; padding: 0.3em 0.8em; }
li.finding { margin: 0.25em 0; } .name { font-weight: 600; } .num { white-space: nowrap; }
table { border-collapse: collapse; margin: 0.4em 0; } td, th { border: 1px solid #cbd5e1;
padding: 2px 8px; } td.n { text-align: right; } img { max-width: 100%; }
"""


def annotation_note(annotation: Mapping | None) -> str:
    """The page's sentence on where its cell types come from (the ``annotation`` config
    section: ``source`` and the source's settings)."""
    annotation = annotation or {}
    source = str(annotation.get("source", "markers"))
    if source == "published":
        what = (f"the authors' labels (obs column "
                f"<code>{html.escape(str(annotation.get('published_column')))}</code> of the "
                "input files, mapped onto mscflow's names by "
                f"<code>{html.escape(str(annotation.get('published_names')))}</code>)")
    elif source == "reference":
        model = annotation.get("reference_model")
        what = ("a celltypist reference model ("
                + (f"<code>{html.escape(str(model))}</code>" if model else
                   "trained by the run from "
                   f"<code>{html.escape(str(annotation.get('reference_h5ad')))}</code>")
                + "), majority vote per cluster")
    else:
        what = "the curated marker sets, per cluster (unassigned where no set is expressed)"
    return (f"<p class='note' data-annotation-source='{_attr(source)}'>Cell types come from "
            f"{what}: <code>annotation.source: {html.escape(source)}</code>. The cross-check "
            "against the other sources is in results/labels.</p>")


def findings_html(tables: Sequence[ResultTable], settings: FindingSettings, *,
                  figure_png: bytes | None = None, annotation: Mapping | None = None) -> str:
    """The findings page: per contrast, per analysis, the calls in sentences (or what
    could have been detected), with the overview heat map embedded (self-contained);
    ``annotation`` (the config section) says where the cell types come from."""
    out = ["<h1>Findings</h1>",
           "<p class='lead'>What changed between conditions, per contrast, at "
           f"FDR {_fdr(settings)}"
           " (Benjamini-Hochberg within each analysis, contrast and metric). Samples are the "
           "replicates: each effect is condition minus reference, estimated from per-sample "
           f"values, with its {CI_TEXT}. Every number below is read from the result tables "
           "of the run (results/contrasts and the stages registered with them).</p>",
           annotation_note(annotation)]
    if figure_png:
        out.append("<figure><img alt='effects per cell type and programme' src='data:image/png;"
                   f"base64,{base64.b64encode(figure_png).decode()}'><figcaption>Score shifts "
                   "(mean score, condition minus reference) per cell type and programme; a dot "
                   "marks a call at the FDR above, grey a pair not tested.</figcaption></figure>")
    contrasts = _contrasts(tables)
    if not contrasts:
        out.append("<p class='null'>No contrast was configured, so nothing was tested "
                   "(config key <code>contrasts</code>).</p>")
    for contrast, row in contrasts:
        out.append(f"<section class='contrast' data-contrast='{_attr(contrast)}'>"
                   f"<h2>{name(row['tissue'])}: {name(row['condition'])} vs "
                   f"{name(row['reference'])} <small>({name(contrast)})</small></h2>")
        headline = _headline(tables, contrast)
        if headline:
            out.append(f"<p class='summary'>{headline}.</p>")
        for rt in tables:
            if rt.kind not in SECTIONS or contrast not in set(rt.table["contrast"].astype(str)):
                continue
            title = ANALYSIS_TITLES.get(rt.analysis, rt.analysis.replace("_", " ").capitalize())
            out.append(f"<h3 data-analysis='{_attr(rt.analysis)}'>{html.escape(title)}</h3>"
                       + SECTIONS[rt.kind](rt, contrast, settings))
        out.append("</section>")
    unknown = [rt.analysis for rt in tables if rt.kind == "unknown"]
    if unknown:
        out.append("<p class='note'>Registered tables not summarised here (their columns are "
                   "not those of a replicate test): "
                   + ", ".join(name(u) for u in unknown) + ".</p>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>mscflow findings</title><style>{_CSS}</style></head><body>"
            + "\n".join(out) + "</body></html>\n")


def findings_records(tables: Sequence[ResultTable],
                     settings: FindingSettings | None = None) -> pd.DataFrame:
    """Every call of the replicate tables as one row (the page's sentences as a table);
    ``named``: the page names the call's unit (:func:`named_calls`)."""
    settings = settings or FindingSettings()
    rows = []
    for rt in tables:
        if rt.kind != "replicate":
            continue
        t = rt.table
        called = t[t["significant"].astype(bool) & (t["status"] == STATUS_TESTED)]
        named = set(named_calls(rt, called, settings).index) if len(called) else set()
        for r, row in called.iterrows():
            rows.append({
                "analysis": rt.analysis, "contrast": row["contrast"], "tissue": row["tissue"],
                "condition": row["condition"], "reference": row["reference"],
                "unit": "; ".join(f"{c}={row[c]}" for c in rt.units),
                "metric": row[rt.metric_column], "direction": "up" if row["effect"] > 0 else "down",
                "effect": row["effect"], "ci_low": row["ci_low"], "ci_high": row["ci_high"],
                "padj": row["padj"], "n_samples_condition": row["n_samples_condition"],
                "n_samples_reference": row["n_samples_reference"], "named": r in named,
                "table_row": int(r),
            })
    columns = ["analysis", "contrast", "tissue", "condition", "reference", "unit", "metric",
               "direction", "effect", "ci_low", "ci_high", "padj", "n_samples_condition",
               "n_samples_reference", "named", "table_row"]
    return pd.DataFrame(rows, columns=columns)


# -------------------------------------------------------------------------- the stage


def findings_stage(tables: Mapping[str, str], *, fdr: float, power: float,
                   min_effect: Mapping[str, float] | None = None,
                   annotation: Mapping | None = None,
                   ) -> tuple[str, pd.DataFrame, object]:
    """Rule report_findings: the registry's tables (``{analysis: parquet}``) -> the page
    (with the heat map embedded; ``annotation``: the config section naming the cell types'
    source), the calls as a table, and the heat map figure."""
    results = read_result_tables(tables)
    shifts = next((rt.table for rt in results if rt.analysis == "score_shifts"), None)
    fig = overview_heatmap(shifts if shifts is not None else pd.DataFrame(
        columns=["metric", "contrast"]))
    settings = FindingSettings(fdr=fdr, power=power, min_effect=dict(min_effect or {}))
    page = findings_html(results, settings, figure_png=figure_png(fig), annotation=annotation)
    return page, findings_records(results, settings), fig
