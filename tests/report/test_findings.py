"""The findings page: sentences from the result tables, every number traced to a table.

The page is read back with tests/findings_page.py: every number found in the tables, no
digit left over.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from findings_page import Node, check_page_numbers, digits_outside_numbers, parse_page  # noqa: E402

from mscflow import contrast
from mscflow.report.findings import (
    FindingSettings,
    findings_html,
    findings_records,
    minimum_detectable_effect,
    result_table,
    standard_error_from_ci,
)


# --- tables made by the real test code ----------------------------------------------------
def _values(rng: np.random.Generator, units: dict[str, list[str]], shifts: dict[tuple, float],
            n_rep: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-sample values (long) for one tissue, two conditions, planted shifts per unit."""
    import itertools

    samples = pd.DataFrame({
        "sample": [f"s_{c}_{i}" for c in ("control", "MSC") for i in range(n_rep)],
        "tissue": "lung", "condition": [c for c in ("control", "MSC") for _ in range(n_rep)],
    })
    rows = []
    for combo in itertools.product(*units.values()):
        unit = dict(zip(units, combo, strict=True))
        for s in samples.itertuples():
            shift = shifts.get(combo, 0.0) if s.condition == "MSC" else 0.0
            rows.append({"tissue": "lung", "sample": s.sample, **unit, "n_cells": 100,
                         "mean": rng.normal(1.0 + shift, 0.05)})
    return pd.DataFrame(rows), samples


def _run(values: pd.DataFrame, samples: pd.DataFrame, units: tuple[str, ...]) -> pd.DataFrame:
    obs = samples[["sample", "tissue", "condition"]]
    contrasts = contrast.parse_contrasts(
        [{"name": "lung_MSC_vs_control", "tissue": "lung", "condition": "MSC",
          "reference": "control"}], samples.set_index("sample", drop=False))
    settings = contrast.ContrastSettings.from_config({})
    designs = contrast.contrast_designs(obs, None, contrasts, settings.min_samples_per_group)
    return contrast.replicate_tests(values, designs, settings, units=units, metrics=("mean",))


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(1)
    types, sets = ["alveolar_macrophage", "t_cell", "at2"], ["il10_stat3_response", "momf"]
    shifts_in = {("alveolar_macrophage", "il10_stat3_response"): 0.5,
                 ("t_cell", "momf"): -0.4}
    values, samples = _values(rng, {"cell_type": types, "gene_set": sets}, shifts_in)
    shifts = _run(values, samples, ("cell_type", "gene_set"))
    comm_units = {"sender": ["momf"], "receiver": ["hepatocyte", "kupffer_cell"],
                  "ligand": ["Il10"], "receptor": ["Il10ra"]}
    comm_values, _ = _values(rng, comm_units, {("momf", "kupffer_cell", "Il10", "Il10ra"): 0.6})
    communication = _run(comm_values, samples, tuple(comm_units))
    # as the communication stage lays it out: a focus label and its own BH families
    communication.insert(4, "focus_axis", ["il10" if r == "kupffer_cell" else ""
                                           for r in communication["receiver"]])
    communication.insert(5, "fdr_family", np.where(communication["focus_axis"] != "",
                                                   "focus", "exploratory"))
    communication = contrast.stats.add_fdr(communication.drop(columns=["padj", "significant"]),
                                           ["contrast", "metric", "fdr_family"], 0.05)
    composition = pd.DataFrame({
        "contrast": "lung_MSC_vs_control", "tissue": "lung", "condition": "MSC",
        "reference": "control", "cell_type": ["momf", "t_cell"],
        "n_samples_condition": 3, "n_samples_reference": 3, "cells_condition": [300, 100],
        "cells_reference": [120, 100], "prop_condition": [0.3, 0.1],
        "prop_reference": [0.12, 0.1], "effect": [1.32, 0.01], "ci_low": [0.9, -0.3],
        "ci_high": [1.74, 0.32], "statistic": [7.0, 0.1], "df": [4.0, 4.0],
        "pvalue": [0.002, 0.9], "dispersion": [1.2, 1.0], "test": "quasipoisson",
        "effect_scale": "log2_abundance_ratio", "covariates": "", "padj": [0.004, 0.9],
        "significant": [True, False], "status": "tested", "note": ""})
    return {"score_shifts": shifts, "composition": composition,
            "communication": communication,
            "other": pd.DataFrame({"x": [1, 2]})}


SETTINGS = FindingSettings(fdr=0.05, power=0.8)
CONFIG = {"contrast_settings.fdr": 0.05, "report.findings_power": 0.8}


@pytest.fixture(scope="module")
def page(tables: dict[str, pd.DataFrame]) -> str:
    return findings_html([result_table(k, v) for k, v in tables.items()], SETTINGS)


# --- tests ------------------------------------------------------------------------------------


def test_tables_are_classified_by_their_columns(tables) -> None:
    shifts = result_table("score_shifts", tables["score_shifts"])
    assert shifts.kind == "replicate" and shifts.units == ("cell_type", "gene_set")
    comm = result_table("communication", tables["communication"])
    assert comm.kind == "replicate" and comm.units == ("focus_axis", "sender", "receiver",
                                                       "ligand", "receptor")
    assert comm.family == ["metric", "fdr_family"]
    comp = result_table("composition", tables["composition"])
    assert comp.kind == "replicate" and comp.units == ("cell_type",)
    assert comp.metric_column == "effect_scale"
    assert result_table("other", tables["other"]).kind == "unknown"


def test_minimum_detectable_effect_matches_statsmodels_power() -> None:
    from scipy import stats
    from statsmodels.stats.power import TTestIndPower

    sigma = 0.3
    for n, alpha in ((3, 0.05), (5, 0.01)):
        se, df = sigma * math.sqrt(2 / n), 2 * n - 2
        d = TTestIndPower().solve_power(nobs1=n, alpha=alpha, power=0.8, ratio=1.0)
        assert minimum_detectable_effect(se, df, alpha, 0.8) == pytest.approx(d * sigma,
                                                                              rel=1e-4)
    # at a family's level (FDR / m), where statsmodels' power returns NaN: the effect found
    # has 80 % power under the noncentral t
    se, df, alpha = sigma * math.sqrt(2 / 3), 4, 0.05 / 40
    mde = minimum_detectable_effect(se, df, alpha, 0.8)
    assert stats.nct.sf(stats.t.isf(alpha / 2, df), df, mde / se) == pytest.approx(0.8, abs=1e-6)
    # more power or a stricter level needs a larger effect
    assert minimum_detectable_effect(se, df, alpha, 0.9) > mde > minimum_detectable_effect(
        se, df, 0.05, 0.8)
    assert math.isnan(minimum_detectable_effect(float("nan"), df, alpha))
    assert math.isnan(minimum_detectable_effect(se, 0, alpha))


def test_standard_error_from_ci_inverts_the_ols_interval() -> None:
    import statsmodels.api as sm

    rng = np.random.default_rng(0)
    x = np.repeat([0.0, 1.0], 4)
    fit = sm.OLS(rng.normal(size=8) + x, sm.add_constant(x)).fit()
    low, high = fit.conf_int(0.05)[1]
    assert standard_error_from_ci(low, high, fit.df_resid) == pytest.approx(fit.bse[1])


def test_page_names_the_planted_shifts_with_direction_and_no_nulls(page) -> None:
    root = parse_page(page)
    found = {(json.loads(li.attrs["data-unit"]).get("cell_type"),
              json.loads(li.attrs["data-unit"]).get("gene_set"), li.attrs["data-direction"])
             for li in root.find_all("finding") if li.attrs["data-analysis"] == "score_shifts"}
    assert found == {("alveolar_macrophage", "il10_stat3_response", "up"),
                     ("t_cell", "momf", "down")}
    comp = [li for li in root.find_all("finding") if li.attrs["data-analysis"] == "composition"]
    assert [(json.loads(li.attrs["data-unit"]), li.attrs["data-direction"]) for li in comp] == [
        ({"cell_type": "momf"}, "up")]
    assert "was more abundant" in comp[0].text() and "-fold change" in comp[0].text()
    heads = {re.sub(r"\s+", " ", "".join(c if isinstance(c, str) else c.text()
                                          for c in g.children if not (isinstance(c, Node)
                                                                      and c.tag == "ul")))
             for g in root.find_all("group")}
    assert heads == {"In alveolar_macrophage (3 MSC vs 3 control samples):",
                     "In t_cell (3 MSC vs 3 control samples):",
                     "Sender momf (3 MSC vs 3 control samples):"}, heads
    sentences = {re.sub(r"\s+", " ", li.text()) for li in root.find_all("finding")}
    assert any(s.startswith("the il10_stat3_response programme rose: mean score +")
               for s in sentences), sentences
    assert any(s.startswith("the momf programme fell: mean score -") for s in sentences)


def test_every_number_on_the_page_comes_from_a_table(page, tables) -> None:
    n = check_page_numbers(page, tables, CONFIG)
    assert n > 30
    assert digits_outside_numbers(page) == []


def test_a_new_stage_appears_without_code_changes_and_nulls_say_what_was_detectable(
        page, tables) -> None:
    root = parse_page(page)
    heads = [h.attrs["data-analysis"] for h in root.find_all(tag="h3")]
    assert heads == ["score_shifts", "composition", "communication"]
    comm = [li for li in root.find_all("finding") if li.attrs["data-analysis"] == "communication"]
    assert [json.loads(li.attrs["data-unit"]) for li in comm] == [
        {"focus_axis": "il10", "sender": "momf", "receiver": "kupffer_cell", "ligand": "Il10",
         "receptor": "Il10ra"}]
    assert re.sub(r"\s+", " ", comm[0].text()).startswith(
        "focus axis il10, receiver kupffer_cell, ligand Il10, receptor Il10ra rose")
    # the exploratory family (its own BH family) has no call: the page says so
    nulls = root.find_all("null")
    assert len(nulls) == 1
    text = nulls[0].text()
    assert "Nothing was called" in text and "to be called with" in text
    mde = [s for s in nulls[0].find_all("num") if s.attrs.get("data-col") == "mde"]
    assert mde and all(float(s.attrs["data-value"]) > 0 for s in mde)
    assert {float(s.attrs["data-alpha"]) for s in mde} == {0.05}  # one test in that family
    summary = " ".join(p.text() for p in root.find_all("summary"))
    assert "fdr family exploratory" in summary and "fdr family focus" in summary
    assert "other" in root.text()  # the unknown table is named as not summarised


def test_long_lists_are_cut_and_counted(tables, monkeypatch) -> None:
    import mscflow.report.findings as findings

    monkeypatch.setattr(findings, "MAX_UNITS_SHOWN", 1)
    page = findings_html([result_table("score_shifts", tables["score_shifts"])], SETTINGS)
    assert len(parse_page(page).find_all("finding")) == 1
    assert "further units with calls" in page
    check_page_numbers(page, {"score_shifts": tables["score_shifts"]}, CONFIG)


def test_units_below_the_minimum_effect_or_called_on_a_secondary_metric_are_counted(
        tables) -> None:
    """The page names a unit only when its primary metric (here the mean score) is called
    with at least ``findings_min_effect``; the other called units are counted in a note whose
    numbers the checker reads back, and findings.tsv marks them ``named`` False."""
    from mscflow.report.findings import named_calls, primary_metric

    shifts = tables["score_shifts"].copy()
    called = shifts["significant"] & (shifts["status"] == "tested")
    strong = shifts.loc[called, "effect"].abs()
    assert len(strong) == 2 and strong.min() > 0.3
    # a small but called shift on the primary metric, and a call on a secondary metric only
    small = shifts.index[(shifts["cell_type"] == "at2") & (shifts["gene_set"] == "momf")][0]
    shifts.loc[small, ["effect", "padj", "significant"]] = [0.04, 0.01, True]
    secondary = shifts.loc[[small]].assign(gene_set="il10_stat3_response", metric="frac_above",
                                           effect=0.2, padj=0.01, significant=True)
    shifts = pd.concat([shifts, secondary], ignore_index=True)
    rt = result_table("score_shifts", shifts)
    assert primary_metric(rt) == "mean"
    settings = FindingSettings(fdr=0.05, power=0.8, min_effect={"mean": 0.1})
    hits = shifts[shifts["significant"] & (shifts["status"] == "tested")]
    assert set(named_calls(rt, hits, settings).index) == set(hits.index[hits["effect"].abs() > 0.3])
    page = findings_html([rt], settings)
    root = parse_page(page)
    named = {(json.loads(li.attrs["data-unit"])["cell_type"],
              json.loads(li.attrs["data-unit"])["gene_set"]) for li in root.find_all("finding")}
    assert named == {("alveolar_macrophage", "il10_stat3_response"), ("t_cell", "momf")}
    assert "2</span> further units with calls" in page
    assert check_page_numbers(page, {"score_shifts": shifts},
                              {**CONFIG, "report.findings_min_effect.mean": 0.1}) > 10
    records = findings_records([rt], settings)
    assert records["named"].tolist() == [abs(e) > 0.3 for e in records["effect"]]
    # with no minimum the small shift is named too; the secondary-only call still is not
    everything = parse_page(findings_html([rt], SETTINGS)).find_all("finding")
    assert len(everything) == 3


def test_sentences_cannot_claim_what_the_table_does_not_hold(tables) -> None:
    """A call the table does not mark significant is never written; removing the one
    composition call removes its sentence; a tampered number fails the check."""
    comp = tables["composition"].copy()
    comp["significant"] = False
    page = findings_html([result_table("composition", comp)], SETTINGS)
    assert not parse_page(page).find_all("finding")
    good = findings_html([result_table("score_shifts", tables["score_shifts"])], SETTINGS)
    tampered = tables["score_shifts"].copy()
    tampered["effect"] = tampered["effect"] * 1.1
    with pytest.raises(AssertionError):
        check_page_numbers(good, {"score_shifts": tampered}, CONFIG)


def test_records_hold_one_row_per_call(tables) -> None:
    records = findings_records([result_table(k, v) for k, v in tables.items()])
    assert len(records) == 4
    assert set(records["analysis"]) == {"score_shifts", "composition", "communication"}
    row = records[records["analysis"] == "composition"].iloc[0]
    assert row["direction"] == "up" and row["effect"] == 1.32 and row["unit"] == "cell_type=momf"


def test_no_contrast_gives_a_page_that_says_so() -> None:
    page = findings_html([], SETTINGS)
    assert "No contrast was configured" in page


def test_overview_heatmap_marks_calls_and_greys_untested_pairs(tables) -> None:
    import matplotlib.pyplot as plt

    from mscflow.report.findings_plots import overview_heatmap

    shifts = tables["score_shifts"].copy()
    shifts.loc[shifts["cell_type"] == "at2", "status"] = "skipped"
    fig = overview_heatmap(shifts)
    ax = fig.axes[0]
    mesh = ax.collections[0]
    values = mesh.get_array()
    assert values.shape == (3, 2) and values.mask[2].all() and not values.mask[:2].any()
    dots = ax.collections[1].get_offsets()
    called = shifts[shifts["significant"] & (shifts["status"] == "tested")]
    assert len(dots) == len(called) == 2
    assert ax.get_yticklabels()[0].get_text() == "alveolar_macrophage"  # curated order
    assert mesh.get_clim()[0] == -mesh.get_clim()[1]
    plt.close(fig)


def test_findings_stage_embeds_the_figure_it_returns(tables, tmp_path) -> None:
    from mscflow.report.findings import findings_stage
    from mscflow.report.findings_plots import figure_png

    paths = {}
    for name in ("score_shifts", "composition"):
        paths[name] = str(tmp_path / f"{name}.parquet")
        tables[name].to_parquet(paths[name])
    page, calls, fig = findings_stage(paths, fdr=0.05, power=0.8)
    import base64

    png = base64.b64decode(re.search(r"data:image/png;base64,([^'\"]+)", page).group(1))
    assert png == figure_png(fig) and png.startswith(b"\x89PNG")
    assert len(calls) == 3


def test_page_says_where_its_cell_types_come_from(tables) -> None:
    results = [result_table(k, v) for k, v in tables.items()]
    default = findings_html(results, SETTINGS)
    assert "data-annotation-source='markers'" in default and "curated marker sets" in default
    published = findings_html(results, SETTINGS, annotation={
        "source": "published", "published_column": "author<type>",
        "published_names": "resources/annotation/published_cell_types.tsv"})
    assert "data-annotation-source='published'" in published
    assert "obs column <code>author&lt;type&gt;</code>" in published
    reference = findings_html(results, SETTINGS, annotation={
        "source": "reference", "reference_model": None, "reference_h5ad": "atlas.h5ad"})
    assert "trained by the run from <code>atlas.h5ad</code>" in reference
    assert "majority vote per cluster" in reference
