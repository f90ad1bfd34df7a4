"""Reading the findings page back: a small HTML tree, every number of the page found in the
result tables (``check_page_numbers``) and the digits no number accounts for
(``digits_outside_numbers``). Used by tests/report/test_findings.py and on the demo run by
tests/workflow/test_report_run.py."""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from mscflow.report.findings import minimum_detectable_effect, standard_error_from_ci

# --- a small HTML tree (the standard library's parser) -----------------------------------


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None = None):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def find_all(self, cls: str | None = None, tag: str | None = None) -> list[Node]:
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if (cls is None or cls in child.classes()) and (tag is None or child.tag == tag):
                    found.append(child)
                found.extend(child.find_all(cls, tag))
        return found


class _TreeBuilder(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "input", "link"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("root", {})
        self.current = self.root

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: v or "" for k, v in attrs}, self.current)
        self.current.children.append(node)
        if tag not in self.VOID:
            self.current = node

    def handle_endtag(self, tag):
        node = self.current
        while node is not self.root and node.tag != tag:
            node = node.parent
        if node is not self.root:
            self.current = node.parent

    def handle_data(self, data):
        self.current.children.append(data)


def parse_page(text: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(text)
    return builder.root


# --- the checks -----------------------------------------------------------------------------


def _close(text: str, value: float) -> bool:
    """The shown text is ``value`` rounded to the digits it shows."""
    shown = float(text.replace("+", "").replace("%", "").strip())
    if value == 0:
        return shown == 0
    mantissa = re.sub(r"e.*$", "", text.replace("+", "").replace("-", "").replace(".", ""))
    digits = max(len(mantissa.lstrip("0")), 1)
    return abs(shown - value) <= 0.51 * 10 ** (math.floor(math.log10(abs(value))) - digits + 1)


def _family_rows(table: pd.DataFrame, rows: list[int]) -> pd.DataFrame:
    """Every row of the Benjamini-Hochberg family of ``rows`` (contrast, metric and, where
    the table has one, fdr_family)."""
    metric_col = "metric" if "metric" in table else "effect_scale"
    keys = ["contrast", metric_col, *(["fdr_family"] if "fdr_family" in table else [])]
    first = table.loc[rows[0]]
    assert (table.loc[rows, keys] == first[keys]).all().all(), "rows span several families"
    return table[(table[keys] == first[keys]).all(axis=1)]


def _mde(table: pd.DataFrame, row: int, alpha: float, power: float) -> float:
    r = table.loc[row]
    se = standard_error_from_ci(r["ci_low"], r["ci_high"], r["df"])
    return minimum_detectable_effect(se, r["df"], alpha, power)


def _count_rows(table: pd.DataFrame, span: Node,
                shown_units: dict[tuple[str, str], set[tuple[str, ...]]]) -> list[int]:
    """The rows a derived span stands for: every row of its contrast and family (metric,
    fdr_family, cell type where named) that meets its filter; ``further_units``: one row per
    called unit the page does not write out."""
    what = span.attrs["data-filter"]
    part = table[table["contrast"].astype(str) == span.attrs["data-contrast"]]
    if "data-metric" in span.attrs:
        metric_col = "metric" if "metric" in table else "effect_scale"
        part = part[part[metric_col].astype(str) == span.attrs["data-metric"]]
    for col in ("cell_type", "fdr_family"):
        if f"data-{col}" in span.attrs:
            part = part[part[col].astype(str) == span.attrs[f"data-{col}"]]
    tested = part["status"] == "tested"
    if what in ("tested", "skipped", "no_test"):
        return part.index[part["status"] == what].tolist()
    if what == "significant":
        return part.index[tested & part["significant"].astype(bool)].tolist()
    if what in ("de_up", "de_down"):
        hit = tested & part["significant"].astype(bool)
        sign = part["log2FoldChange"] > 0 if what == "de_up" else part["log2FoldChange"] < 0
        return part.index[hit & sign].tolist()
    if what in ("called_units", "further_units"):
        units = json.loads(span.attrs["data-units"])
        called = part[tested & part["significant"].astype(bool)].drop_duplicates(units)
        if what == "called_units":
            return called.index.tolist()
        shown = shown_units.get((span.attrs["data-table"], span.attrs["data-contrast"]), set())
        keys = called[units].astype(str).apply(tuple, axis=1)
        return called.index[~keys.isin(shown)].tolist()
    raise AssertionError(f"unknown filter {what}")


def check_page_numbers(page: str, tables: dict[str, pd.DataFrame], config: dict[str, float]
                       ) -> int:
    """Every number span of the page, read back and found in the tables; returns how many.

    ``config`` maps the config keys the page may cite (``contrast_settings.fdr``,
    ``report.findings_power``) to their values.
    """
    root = parse_page(page)
    spans = root.find_all("num")
    fdr = config["contrast_settings.fdr"]
    shown_units: dict[tuple[str, str], set[tuple[str, ...]]] = {}
    for li in root.find_all("finding"):
        key = (li.attrs["data-analysis"], li.attrs["data-contrast"])
        shown_units.setdefault(key, set()).add(tuple(json.loads(li.attrs["data-unit"]).values()))
    mde_cache: dict[tuple, np.ndarray] = {}
    tables = {name: table.reset_index(drop=True) for name, table in tables.items()}
    for span in spans:
        value = float(span.attrs["data-value"])
        text = span.text()
        if "data-key" in span.attrs:
            key = span.attrs["data-key"]
            assert value == config[key], (key, value)
            shown = 100 * value if text.strip().endswith("%") else value
            assert _close(text, shown), (key, text)
            continue
        table = tables[span.attrs["data-table"]]
        if "data-derived" not in span.attrs:
            row, col = int(span.attrs["data-row"]), span.attrs["data-col"]
            assert table.at[row, col] == value, (span.attrs, table.at[row, col])
            assert _close(text, value), (text, value)
            continue
        kind, col = span.attrs["data-derived"], span.attrs.get("data-col", "")
        if kind in ("fold2", "mde"):
            rows = json.loads(span.attrs["data-rows"])
        else:
            rows = _count_rows(table, span, shown_units)
        if kind == "count":
            assert len(rows) == value == int(text), (span.attrs, text, len(rows))
            continue
        if kind == "fold2":
            expected = 2.0 ** table.at[rows[0], "effect"]
        else:
            if col == "mde":
                alpha, power = float(span.attrs["data-alpha"]), float(span.attrs["data-power"])
                family = _family_rows(table, rows)
                m = int((family["status"] == "tested").sum())
                assert alpha == pytest.approx(fdr / m, rel=1e-12), (alpha, fdr, m)
                assert power == config["report.findings_power"]
                memo = (span.attrs["data-table"], alpha, power, tuple(rows))
                if memo not in mde_cache:  # median, min and max share the rows
                    found = np.array([_mde(table, r, alpha, power) for r in rows])
                    mde_cache[memo] = found[np.isfinite(found)]
                values = mde_cache[memo]
            else:
                values = table.loc[rows, col].to_numpy(float)
            expected = {"mde": values[0] if len(values) == 1 else np.nan, "min": values.min(),
                        "max": values.max(), "median": np.median(values)}[kind]
        assert value == pytest.approx(expected, rel=1e-9), (span.attrs, expected)
        assert _close(text, value), (text, value)
    return len(spans)


def digits_outside_numbers(page: str) -> list[str]:
    """Text pieces of the page body holding a digit that no number or name span explains."""
    root = parse_page(page)
    body = root.find_all(tag="body")[0]
    found = []

    def walk(node: Node) -> None:
        if node.tag in ("style", "script") or node.classes() & {"num", "name", "const"}:
            return
        if node.tag == "img":
            return
        for child in node.children:
            if isinstance(child, str):
                if re.search(r"\d", child):
                    found.append(child.strip())
            else:
                walk(child)

    walk(body)
    return found
