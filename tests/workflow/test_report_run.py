"""The report's first page on the demo: the findings against the planted truth, every number
against the result tables, the explorer in headless Chromium, and the viewer-ready export."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from findings_page import check_page_numbers, digits_outside_numbers, parse_page
from helpers import ARTIFACTS, page_problems

MACROPHAGES = {"alveolar_macrophage", "interstitial_macrophage", "kupffer_cell", "momf"}


def planted_truth(run: Path) -> tuple[dict[tuple[str, str, str], str], set[tuple[str, str, str]]]:
    """Planted score shifts ``{(tissue, cell type, gene set): direction}`` and the nulls.

    From ``planted_score_effects.tsv`` (per tissue x cell type x gene set, ``status``
    planted / unchanged / partial; pairs it does not list carry no planted gene) when the demo
    writes it; else from ``planted_effects.tsv``
    (sets with >= half of their genes raised in macrophages are planted there, sets with
    none of their genes raised are null everywhere, other cell types are null).
    """
    demo = run / "resources" / "demo"
    per_unit = demo / "planted_score_effects.tsv"
    shifts = pd.read_parquet(run / "results/contrasts/score_shifts.parquet")
    tested = set(zip(shifts["tissue"], shifts["cell_type"], shifts["gene_set"], strict=True))
    if per_unit.is_file():
        # every pair the table lists as unchanged, or does not list at all (no planted gene, no
        # expected shift), is a null; "partial" pairs are neither
        table = pd.read_csv(per_unit, sep="\t")
        keys = list(zip(table["tissue"], table["cell_type"], table["gene_set"], strict=True))
        planted = {k: ("up" if shift > 0 else "down") for k, status, shift in zip(
            keys, table["status"], table["expected_log2_shift"], strict=True)
            if status == "planted"}
        listed = dict(zip(keys, table["status"], strict=True))
        nulls = {k for k in tested if listed.get(k, "unchanged") == "unchanged"}
        return planted, nulls
    fraction = pd.read_csv(demo / "planted_effects.tsv", sep="\t").set_index("gene_set")[
        "planted_gene_fraction"]
    planted, nulls = {}, set()
    for row in shifts.drop_duplicates(["tissue", "cell_type", "gene_set"]).itertuples():
        key = (row.tissue, row.cell_type, row.gene_set)
        if row.cell_type in MACROPHAGES and fraction[row.gene_set] >= 0.5:
            planted[key] = "up"
        elif row.cell_type not in MACROPHAGES or fraction[row.gene_set] == 0:
            nulls.add(key)
    return planted, nulls


def _config(run: Path) -> dict:
    """The run's config with the schema defaults filled."""
    from mscflow.config import validate_config

    return validate_config(yaml.safe_load((run / "config" / "config.yaml").read_text()))


def _findings(run: Path) -> tuple[str, list]:
    page = (run / "results" / "findings.html").read_text()
    return page, parse_page(page).find_all("finding")


def test_findings_name_every_planted_effect_with_direction_and_no_nulls(
        demo_run: Path) -> None:
    """Every planted score shift is named with its direction, none of the unchanged pairs
    is, and the MoMF expansion is the one composition change. The page names a pair exactly
    when the table calls its mean score with at least ``report.findings_min_effect``; the
    table's own calls of nulls stay within the nominal rate among the tested nulls.
    """
    page, items = _findings(demo_run)
    planted, nulls = planted_truth(demo_run)
    assert planted and nulls
    named: dict[tuple[str, str, str], set[str]] = {}
    for li in items:
        if li.attrs["data-analysis"] != "score_shifts":
            continue
        unit = json.loads(li.attrs["data-unit"])
        key = (li.attrs["data-tissue"], unit["cell_type"], unit["gene_set"])
        named.setdefault(key, set()).add(li.attrs["data-direction"])
    missing = {k: d for k, d in planted.items() if d not in named.get(k, set())}
    assert not missing, f"planted score shifts not named with their direction: {missing}"
    false = sorted(k for k in named if k in nulls)
    fdr = _config(demo_run)["contrast_settings"]["fdr"]
    print(f"findings: {len(named)} score-shift units named, {len(planted)} planted all named; "
          f"nulls named: {false}")
    assert not false, f"nulls named: {false}"
    # The page names a pair exactly when the table calls its mean score by at least the
    # minimum effect; the table's calls of nulls stay within the nominal rate.
    floor = _config(demo_run)["report"]["findings_min_effect"]["mean"]
    shifts = pd.read_parquet(demo_run / "results/contrasts/score_shifts.parquet")
    shifts = shifts[shifts["status"] == "tested"]
    keys = list(zip(shifts["tissue"], shifts["cell_type"], shifts["gene_set"], strict=True))
    hit = shifts["significant"].astype(bool).to_numpy()
    lead = hit & (shifts["metric"] == "mean").to_numpy() & (shifts["effect"].abs() >= floor
                                                             ).to_numpy()
    assert set(named) == {k for k, ok in zip(keys, lead, strict=True) if ok}
    called = {k for k, ok in zip(keys, hit, strict=True) if ok}
    tested_nulls = set(keys) & nulls
    print(f"table calls of nulls (any metric): {sorted(called & nulls)}")
    assert len(called & nulls) <= fdr * len(tested_nulls) * 2  # two metrics, one BH each
    # composition: the MoMF expansion in the liver, and nothing else
    comp = [(li.attrs["data-tissue"], json.loads(li.attrs["data-unit"])["cell_type"],
             li.attrs["data-direction"]) for li in items
            if li.attrs["data-analysis"] == "composition"]
    assert comp == [("liver", "momf", "up")], comp
    text = re.sub(r"\s+", " ", parse_page(page).text())
    assert "momf was more abundant" in text


def test_every_number_of_the_demo_findings_is_in_a_result_table(demo_run: Path) -> None:
    page, _ = _findings(demo_run)
    filled = _config(demo_run)
    tables = {}
    log = (demo_run / "logs/report/report_findings.log").read_text()
    for name, path in re.findall(r"table (\S+): (\S+)", log):
        tables[name] = pd.read_parquet(demo_run / path)
    assert {"score_shifts", "composition"} <= set(tables)
    n = check_page_numbers(page, tables, {
        "contrast_settings.fdr": filled["contrast_settings"]["fdr"],
        "report.findings_power": filled["report"]["findings_power"],
        "report.findings_min_effect.mean": filled["report"]["findings_min_effect"]["mean"]})
    assert n > 50, n
    assert digits_outside_numbers(page) == []
    calls = pd.read_csv(demo_run / "results/findings.tsv", sep="\t")
    for row in calls.itertuples():
        source = tables[row.analysis].iloc[row.table_row]
        assert source["effect"] == pytest.approx(row.effect, rel=1e-5)
        assert bool(source["significant"]) and source["padj"] < filled["contrast_settings"]["fdr"]
    print(f"findings: {n} numbers checked against {sorted(tables)}")


def test_export_is_laid_out_for_cellxgene(demo_run: Path) -> None:
    import anndata as ad

    from mscflow.inputs.sample_counts import counts_matrix
    from mscflow.report.export import viewer_problems

    path = demo_run / "results/export/annotated_cellxgene.h5ad"
    export = ad.read_h5ad(path)
    source = ad.read_h5ad(demo_run / "results/annotate/annotated.h5ad", backed="r")
    assert viewer_problems(export) == []
    assert export.shape == source.shape and (export.obs_names == source.obs_names).all()
    assert {"cell_type", "sample", "condition", "tissue", "leiden_1"} <= set(export.obs)
    assert all(export.obs[c].dtype == "category" for c in ("cell_type", "sample", "leiden_1"))
    assert any(c.startswith("score_") for c in export.obs)
    qc_counts = counts_matrix(sorted(demo_run.glob("results/qc/*.h5ad")), source.obs_names,
                              source.var_names)  # the annotated file keeps no counts
    assert (export.layers["counts"] != qc_counts).nnz == 0
    print(f"export: {path.stat().st_size / 1e6:.1f} MB, obs {list(export.obs.columns)}")


def test_explorer_of_the_demo_in_headless_chromium(demo_run: Path, browser) -> None:  # noqa: F811
    from selenium.webdriver.support.ui import Select, WebDriverWait

    page = demo_run / "results/report/explorer.html"
    size = page.stat().st_size
    browser.get("about:blank")
    page_problems(browser)
    start = time.monotonic()
    browser.get(page.resolve().as_uri())
    WebDriverWait(browser, 120).until(
        lambda d: d.execute_script("return window.explorer && window.explorer.renders >= 1"))
    first = browser.execute_script("return window.explorer.firstRenderMs")
    print(f"explorer: {size / 1e6:.1f} MB, first render {first / 1000:.1f} s after navigation "
          f"({time.monotonic() - start:.1f} s wall)")
    state = browser.execute_script(
        "const p = document.getElementById('plot');"
        "return {type: window.explorer.traceType, traces: p.data.length,"
        " names: p.data.map(t => t.name), points: p.data.reduce((s, t) => s + t.x.length, 0)}")
    note = browser.find_element("id", "note")
    assert state["type"] == "scattergl", state
    assert state["points"] == int(note.get_attribute("data-shown"))
    assert any(n.startswith("momf") for n in state["names"]), state["names"]
    options = [o.get_attribute("value") for o in Select(
        browser.find_element("id", "colour")).options]
    assert {"cell_type", "sample", "condition", "leiden_1"} <= set(options)
    assert any(o.startswith("score_") for o in options) and "gene:Il10" in options
    # switching the colour changes the plot: one trace coloured by value, its colour bar
    Select(browser.find_element("id", "colour")).select_by_value("gene:Il10")
    WebDriverWait(browser, 60).until(lambda d: d.execute_script(
        "return window.explorer.renderedField === 'gene:Il10'"))
    marker = browser.execute_script(
        "const t = document.getElementById('plot').data[0];"
        "return {n: document.getElementById('plot').data.length, bar: t.marker.colorbar.title.text,"
        " max: Math.max(...t.marker.color), text: t.text[t.text.length - 1]}")
    assert marker["n"] == 1 and marker["bar"] == "Il10" and marker["max"] > 0
    assert "sample: " in marker["text"] and "cell type: " in marker["text"] and \
        "Il10: " in marker["text"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "explorer_il10.png"))
    problems = page_problems(browser)
    assert not problems, "\n".join(problems)
