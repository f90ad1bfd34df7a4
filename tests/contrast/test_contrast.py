"""Tests for replicate-aware condition contrasts (mscflow.contrast, plotting_contrast).

A seeded synthetic AnnData (2 tissues x 2 conditions x 3 replicates) carries planted
effects: efferocytosis and IL-10 scores and genes rise in macrophages of MSC samples in
both tissues, and MoMF expand in MSC liver. Everything else is null.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

from mscflow import contrast as C
from mscflow.config import section_schema
from mscflow.contrast.stats import _mwu_null_cdf
from mscflow.errors import ConfigError
from mscflow.plotting import save

TYPES = {
    "lung": ["macrophage", "T_cell", "endothelial", "AT2"],
    "liver": ["macrophage", "hepatocyte", "MoMF", "endothelial", "T_cell"],
}
PLANTED_SETS = ("efferocytosis_combined", "il10_stat3_response")
CONTRASTS = [
    {"name": "lung_MSC_vs_control", "tissue": "lung", "condition": "MSC",
     "reference": "control"},
    {"name": "liver_MSC_vs_control", "tissue": "liver", "condition": "MSC",
     "reference": "control"},
]
SETTINGS = {"gsea": {"permutations": 1000, "seed": 0, "min_size": 5}}


def make_synthetic(
    seed: int = 0, planted: bool = True, n_rep: int = 3, n_genes: int = 600, cells: int = 60,
    momf_fold: float = 4.0, score_shift: float = 0.5, gene_fold: float = 2.0,
) -> tuple[ad.AnnData, pd.DataFrame, dict[str, list[str]]]:
    """Seeded AnnData + sample sheet + gene sets with (optionally) planted effects."""
    rng = np.random.default_rng(seed)
    genes = [f"Gene{i}" for i in range(n_genes)]
    sets = {"efferocytosis_combined": genes[0:25], "il10_stat3_response": genes[25:50],
            "pan_macrophage": genes[50:75], "null_a": genes[100:125],
            "null_b": genes[200:225]}
    base_mu = rng.gamma(2.0, 1.0, n_genes)
    obs_parts, mats, sheet = [], [], []
    for tissue, cts in TYPES.items():
        type_mu = {ct: base_mu * rng.lognormal(0, 0.5, n_genes) for ct in cts}
        for cond in ("control", "MSC"):
            for r in range(1, n_rep + 1):
                s = f"{tissue}_{cond}_{r}"
                sheet.append({"sample": s, "tissue": tissue, "condition": cond,
                              "replicate": r, "species": "mouse", "batch": f"b{r % 2}"})
                w = np.ones(len(cts))
                if planted and tissue == "liver" and cond == "MSC":
                    w[cts.index("MoMF")] = momf_fold
                n_per = rng.multinomial(cells * len(cts), rng.dirichlet(300 * w / w.sum()))
                for ct, nc in zip(cts, n_per, strict=True):
                    eff = planted and ct == "macrophage" and cond == "MSC"
                    mu = type_mu[ct] * rng.gamma(50, 1 / 50, n_genes)
                    if eff:
                        mu[0:50] *= gene_fold
                    lam = mu[None, :] * rng.lognormal(0, 0.3, nc)[:, None]
                    mats.append(sp.csr_matrix(rng.poisson(lam)))
                    off = rng.normal(0, 0.05, 4)
                    noise = rng.normal(0, 0.3, (nc, 4))
                    shift = score_shift if eff else 0.0
                    obs_parts.append(pd.DataFrame({
                        "sample": s, "tissue": tissue, "condition": cond, "replicate": r,
                        "species": "mouse", "batch": f"b{r % 2}", "cell_type": ct,
                        "score_efferocytosis_combined": off[0] + noise[:, 0] + shift,
                        "score_il10_stat3_response": off[1] + noise[:, 1] + shift,
                        "score_pan_macrophage": off[2] + noise[:, 2],
                        "score_null_a": off[3] + noise[:, 3],
                    }, index=[f"{s}:{ct}-{i}" for i in range(nc)]))
    obs = pd.concat(obs_parts)
    counts = sp.vstack(mats).tocsr().astype(np.int64)
    adata = ad.AnnData(X=counts.astype(np.float32), obs=obs, var=pd.DataFrame(index=genes))
    adata.layers["counts"] = counts
    samples = pd.DataFrame(sheet).set_index("sample", drop=False)
    return adata, samples, sets


def run_all(adata, samples, sets, contrasts=CONTRASTS, settings=SETTINGS):
    """All four contrast tables for one dataset."""
    ks = C.parse_contrasts(contrasts, samples)
    st = C.ContrastSettings.from_config(settings)
    shifts = C.score_shifts(adata.obs, ks, st, samples)
    comp = C.composition_tests(adata.obs, ks, st, samples)
    de = C.pseudobulk_de(adata, ks, st, samples)
    gsea = C.gsea_prerank(de, sets, st)
    return {"shifts": shifts, "composition": comp, "de": de, "gsea": gsea}


@pytest.fixture(scope="module")
def synth():
    return make_synthetic(0)


@pytest.fixture(scope="module")
def results(synth):
    return run_all(*synth)


def _planted_shift(df: pd.DataFrame) -> pd.Series:
    return (df["cell_type"] == "macrophage") & df["gene_set"].isin(PLANTED_SETS)


# ---------------------------------------------------------------------------- config
def test_parse_contrasts_validates_against_sheet(synth):
    _, samples, _ = synth
    ks = C.parse_contrasts(CONTRASTS, samples)
    assert [k.name for k in ks] == ["lung_MSC_vs_control", "liver_MSC_vs_control"]
    bad = [{**CONTRASTS[0], "tissue": "kidney"}]
    with pytest.raises(ValueError, match="lung_MSC_vs_control.*kidney"):
        C.parse_contrasts(bad, samples)
    with pytest.raises(ConfigError) as err:  # the fragments docs/errors.md lists
        C.parse_contrasts([{**bad[0], "name": "kidney_msc"}], samples)
    assert "config key 'contrasts[0]' (contrast 'kidney_msc')" in str(err.value)
    assert "tissue 'kidney' has no samples" in str(err.value)
    with pytest.raises(ConfigError, match="condition 'LPS' has no samples of tissue 'lung'"):
        C.parse_contrasts([CONTRASTS[1], {**CONTRASTS[0], "condition": "LPS"}], samples)
    with pytest.raises(ValueError, match="condition 'IFN' has no samples"):
        C.parse_contrasts([{**CONTRASTS[0], "condition": "IFN"}], samples)
    with pytest.raises(ValueError, match="covariate 'sex' is not a sample-sheet column"):
        C.parse_contrasts([{**CONTRASTS[0], "covariates": ["sex"]}], samples)
    with pytest.raises(ValueError, match="listed twice"):
        C.parse_contrasts([CONTRASTS[0], CONTRASTS[0]], samples)
    with pytest.raises(ValueError, match="name may only contain"):
        C.parse_contrasts([{**CONTRASTS[0], "name": "lung MSC"}], samples)
    with pytest.raises(ConfigError, match="'covariate'.*did you mean 'covariates'"):
        C.parse_contrasts([{**CONTRASTS[0], "covariate": ["batch"]}], samples)
    with pytest.raises(ConfigError, match=r"contrasts\[0\].*lacks key"):
        C.parse_contrasts([{"name": "x", "tissue": "lung"}], samples)
    assert C.parse_contrasts([{**CONTRASTS[1], "covariates": ["batch"]}],
                             samples)[0].covariates == ("batch",)


def test_settings_defaults_and_errors():
    st = C.ContrastSettings.from_config({"fdr": 0.1, "gsea": {"permutations": 50},
                                         "pseudobulk": {"min_counts": 3}})
    assert st.fdr == 0.1 and st.gsea.permutations == 50 and st.pseudobulk.min_counts == 3
    assert st.score_test == "ols" and st.composition_test == "quasipoisson"
    with pytest.raises(ValueError, match="score_test"):
        C.ContrastSettings.from_config({"score_test": "wilcoxon"})
    with pytest.raises(ValueError, match="unknown key"):
        C.ContrastSettings.from_config({"min_cell": 3})
    with pytest.raises(ValueError, match="min_size <= max_size"):
        C.ContrastSettings.from_config({"gsea": {"min_size": 10, "max_size": 5}})


def test_settings_typo_suggests_the_key():
    with pytest.raises(ConfigError, match="'fdrr'.*did you mean 'fdr'"):
        C.ContrastSettings.from_config({"fdrr": 0.1})
    with pytest.raises(ConfigError, match="'permutation'.*did you mean 'permutations'"):
        C.ContrastSettings.from_config({"gsea": {"permutation": 10}})


@pytest.mark.parametrize("cls", [C.ContrastSettings, C.GseaSettings, C.PseudobulkSettings])
def test_settings_fields_are_the_schema_keys(cls):
    """Every key of the schema section is a field and vice versa; no field has a default
    (defaults live in the schema only)."""
    fields = dataclasses.fields(cls)
    assert {f.name for f in fields} == set(section_schema(cls.SECTION)["properties"])
    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               for f in fields)


# ---------------------------------------------------------------------------- statistics
def test_bh_adjust_matches_statsmodels_and_keeps_nan():
    from statsmodels.stats.multitest import multipletests

    p = np.random.default_rng(1).uniform(size=40) ** 3
    assert np.allclose(C.bh_adjust(p), multipletests(p, method="fdr_bh")[1])
    q = C.bh_adjust([0.01, np.nan, 0.04])
    assert np.isnan(q[1]) and np.allclose(q[[0, 2]], [0.02, 0.04])


def test_ols_without_covariates_is_the_pooled_t_test():
    rng = np.random.default_rng(3)
    y = pd.Series(rng.normal(size=7), index=list("abcdefg"))
    design = pd.DataFrame({"is_condition": [1, 1, 1, 0, 0, 0, 0.0]}, index=y.index)
    res = C.test_shift(y, design)
    t = stats.ttest_ind(y.iloc[:3], y.iloc[3:], equal_var=True)
    ci = t.confidence_interval(0.95)
    assert res["pvalue"] == pytest.approx(t.pvalue)
    assert (res["ci_low"], res["ci_high"]) == pytest.approx((ci.low, ci.high))
    w = C.test_shift(y, design, method="welch")
    assert w["pvalue"] == pytest.approx(stats.ttest_ind(y.iloc[:3], y.iloc[3:],
                                                        equal_var=False).pvalue)


@pytest.mark.parametrize("m,n", [(3, 3), (4, 5), (6, 2)])
def test_exact_mann_whitney_null_matches_scipy(m, n):
    cdf = _mwu_null_cdf(m, n)
    assert len(cdf) == m * n + 1 and cdf[-1] == pytest.approx(1.0)
    for u in range(m * n + 1):
        a, b = _samples_with_u(m, n, u)
        test = stats.mannwhitneyu(a, b, alternative="less", method="exact")
        assert test.statistic == u
        assert cdf[u] == pytest.approx(test.pvalue)


def _samples_with_u(m: int, n: int, u: int) -> tuple[np.ndarray, np.ndarray]:
    """Tie-free samples whose Mann-Whitney U (of the first) equals ``u``."""
    b = np.arange(n, dtype=float) * 10
    a = []
    left = u
    for _ in range(m):
        k = min(left, n)  # this x beats k of the y values
        a.append(b[k - 1] + 1 if k else -1.0)
        left -= k
    return np.array(a) + np.arange(m) * 1e-3, b


def test_rank_test_cannot_reach_005_with_3_vs_3_and_says_so_about_ci():
    y = pd.Series([5.0, 6, 7, 0, 1, 2], index=list("abcdef"))
    design = pd.DataFrame({"is_condition": [1, 1, 1, 0, 0, 0.0]}, index=y.index)
    res = C.test_shift(y, design, method="mannwhitney")
    assert res["pvalue"] == pytest.approx(0.1)
    assert np.isnan(res["ci_low"]) and "not attainable" in res["note"]
    assert res["effect"] == pytest.approx(5.0)
    y5 = pd.Series(np.r_[np.arange(5) + 10.0, np.arange(5.0)])
    d5 = pd.DataFrame({"is_condition": [1.0] * 5 + [0.0] * 5})
    r5 = C.test_shift(y5, d5, method="mannwhitney")
    assert r5["ci_low"] <= r5["effect"] <= r5["ci_high"]
    with pytest.raises(ValueError, match="cannot adjust for covariates"):
        C.test_shift(y, design.assign(batch=list("xyxyxy")), ["batch"], "mannwhitney")


# ---------------------------------------------------------------- generic replicate tests
def test_replicate_tests_on_custom_units():
    """The generic per-sample test on a toy ligand-receptor-like table: any unit columns,
    any metrics; same statuses, notes and FDR families as the score shifts."""
    sheet = pd.DataFrame({
        "sample": ["s1", "s2", "s3", "s4", "s5", "s6", "l1", "l2"],
        "tissue": ["lung"] * 6 + ["liver"] * 2,
        "condition": ["MSC"] * 3 + ["control"] * 3 + ["MSC", "control"],
    }).set_index("sample", drop=False)
    rng = np.random.default_rng(0)
    rows = []
    for unit in [("mac", "T"), ("mac", "endo"), ("T", "mac"), ("endo", "AT2")]:
        for s, tissue, cond in sheet[["tissue", "condition"]].itertuples():
            shift = 2.0 if unit == ("mac", "T") and cond == "MSC" else 0.0
            few = unit == ("T", "mac") and s in ("s1", "s2")
            rows.append({"tissue": tissue, "sample": s, "sender": unit[0],
                         "receiver": unit[1], "n_cells": 2 + (s == "s2") if few else 50,
                         "strength": shift + rng.normal(0, 0.1), "frac": rng.uniform()})
    values = pd.DataFrame(rows)
    settings = C.ContrastSettings.from_config({"exclude_cell_types": ["AT2"]})
    contrasts = C.parse_contrasts(
        [{"name": t, "tissue": t, "condition": "MSC", "reference": "control"}
         for t in ("lung", "liver")], sheet)
    designs = C.contrast_designs(sheet, sheet, contrasts, settings.min_samples_per_group)
    out = C.replicate_tests(values, designs, settings, units=("sender", "receiver"),
                            metrics=("strength", "frac"), label_columns=("sender", "receiver"),
                            exclude_columns=("sender", "receiver"))
    assert list(out.columns[:7]) == ["contrast", "tissue", "condition", "reference", "sender",
                                     "receiver", "metric"]
    assert list(out.columns[-4:]) == ["padj", "significant", "status", "note"]
    assert len(out) == 2 * 4 * 2
    row = out.set_index(["contrast", "sender", "receiver", "metric"]).sort_index()
    planted = row.loc[("lung", "mac", "T", "strength")]
    assert planted["status"] == "tested" and planted["significant"]
    assert planted["effect"] == pytest.approx(2.0, abs=0.3) and planted["ci_low"] > 0
    few = row.loc[("lung", "T", "mac", "strength")]
    assert few["status"] == "skipped" and np.isnan(few["pvalue"])
    assert few["note"] == ("sender 'T', receiver 'mac' in 'lung': 1 'MSC' and 3 'control' "
                           "sample(s) with >= 10 cells (need >= 2 per group); excluded "
                           "sample(s) with < 10 cells: s1 (2), s2 (3)")
    assert row.loc[("lung", "endo", "AT2", "frac"), "note"] == (
        "cell type excluded by contrast_settings.exclude_cell_types")
    liver = out[(out["contrast"] == "liver") & (out["receiver"] != "AT2")]
    assert len(liver) == 6
    assert (liver["status"] == "no_test").all() and liver["padj"].isna().all()
    assert liver["note"].str.startswith("no test possible: tissue 'liver' has 1 sample(s)").all()
    assert liver["effect"].notna().all()
    tested = out[out["status"] == "tested"]
    for _, fam in tested.groupby(["contrast", "metric"]):  # BH per (contrast, metric)
        assert np.allclose(fam["padj"], C.bh_adjust(fam["pvalue"]))


# ---------------------------------------------------------------------------- planted effects
def test_score_shifts_find_planted_and_little_else(results):
    s = results["shifts"]
    tested = s[s["status"] == "tested"]
    # (4 lung + 5 liver cell types) x 4 gene sets x 2 metrics, all tested
    assert len(tested) == len(s) == (4 + 5) * 4 * 2
    planted = tested[_planted_shift(tested) & (tested["metric"] == "mean")]
    assert len(planted) == 4
    assert planted["significant"].all() and (planted["effect"] > 0).all()
    assert (planted["ci_low"] > 0).all()
    null = tested[~_planted_shift(tested)]
    assert null["significant"].mean() <= 0.05


def test_composition_finds_momf_expansion_only(results):
    c = results["composition"]
    momf = c[(c["tissue"] == "liver") & (c["cell_type"] == "MoMF")].iloc[0]
    assert momf["significant"] and momf["effect"] > 0 and momf["ci_low"] > 0
    others = c[~((c["tissue"] == "liver") & (c["cell_type"] == "MoMF"))]
    assert not others["significant"].any()
    assert set(c["status"]) == {"tested"}


def test_pseudobulk_de_recovers_planted_genes(results):
    de = results["de"]
    mac = de[(de["cell_type"] == "macrophage") & de["significant"]]
    idx = mac["gene"].str.replace("Gene", "").astype(int)
    for tissue in ("lung", "liver"):
        hits = idx[mac["tissue"] == tissue]
        assert (hits < 50).sum() >= 25  # most planted genes found
        assert (hits >= 50).mean() <= 0.1  # few false discoveries among calls
        assert (mac.loc[mac["tissue"] == tissue, "log2FoldChange"][hits < 50] > 0).all()
    other = de[(de["cell_type"] != "macrophage") & (de["status"] == "tested")]
    assert other["significant"].mean() < 0.01


def test_gsea_finds_planted_programmes(results):
    g = results["gsea"]
    planted = g[(g["cell_type"] == "macrophage") & g["gene_set"].isin(PLANTED_SETS)]
    assert len(planted) == 4
    assert planted["significant"].all() and (planted["nes"] > 0).all()
    assert planted["leading_edge"].str.split(";").map(len).min() >= 10
    null = g[~((g["cell_type"] == "macrophage") & g["gene_set"].isin(PLANTED_SETS))]
    assert null["significant"].mean() <= 0.05


def test_running_enrichment_matches_gseapy_es(results, synth):
    _, _, sets = synth
    de, g = results["de"], results["gsea"]
    sub = de[(de["contrast"] == "lung_MSC_vs_control") & (de["cell_type"] == "macrophage")]
    run = C.running_enrichment(C.ranking_from_de(sub), sets["efferocytosis_combined"])
    es = run["running_es"].to_numpy()[np.argmax(np.abs(run["running_es"].to_numpy()))]
    row = g[(g["contrast"] == "lung_MSC_vs_control") & (g["cell_type"] == "macrophage")
            & (g["gene_set"] == "efferocytosis_combined")].iloc[0]
    assert es == pytest.approx(row["es"], abs=1e-6)


# ---------------------------------------------------------------------------- null checks
def test_permute_conditions_is_balanced_and_seeded(synth):
    _, samples, _ = synth
    meta = samples[["tissue", "condition"]]
    p1 = C.permute_conditions(meta, seed=7)
    p2 = C.permute_conditions(meta, seed=7)
    pd.testing.assert_frame_equal(p1, p2)
    for _, sub in p1.assign(orig=meta["condition"]).groupby("tissue"):
        assert sub["condition"].value_counts().to_dict() == {"MSC": 3, "control": 3}
        mixed = pd.crosstab(sub["condition"], sub["orig"])
        assert (mixed > 0).all().all()  # no group is purely one original condition


def _permuted(adata, samples, seed):
    perm = C.permute_conditions(samples, seed=seed)
    a = adata.copy()
    a.obs["condition"] = a.obs["sample"].map(perm["condition"]).to_numpy()
    return a, perm


@pytest.mark.slow
def test_permuted_labels_call_no_more_than_nominal(synth):
    """3 vs 3: the best within-tissue permutation is 2:1 vs 1:2, so a third of each planted
    effect survives as a real group difference. Per-sample tests do not detect it (the
    mixed groups inflate their variance); GSEA pools 25 co-shifted genes and may, which is
    correct, so for GSEA only families without a planted effect count as null."""
    adata, samples, sets = synth
    res = run_all(*_permuted(adata, samples, seed=11), sets)
    for key in ("shifts", "composition", "de"):
        tested = res[key][res[key]["status"] == "tested"]
        assert len(tested) > 0
        assert tested["significant"].mean() <= 0.05, key
    g = res["gsea"]
    null = g[~((g["cell_type"] == "macrophage") & g["gene_set"].isin(PLANTED_SETS))]
    assert null["significant"].mean() <= 0.05


@pytest.mark.slow
def test_balanced_permutation_of_even_design_is_a_true_null():
    """4 vs 4 permuted 2:2 within tissue removes every planted effect exactly."""
    adata, samples, sets = make_synthetic(2, n_rep=4, n_genes=400)
    a, perm = _permuted(adata, samples, seed=3)
    mix = pd.crosstab([perm["tissue"], perm["condition"]], samples["condition"])
    assert (mix == 2).all().all()
    res = run_all(a, perm, sets)
    for key, table in res.items():
        tested = table[table["status"] == "tested"]
        assert len(tested) > 0
        assert tested["significant"].mean() <= 0.05, key


def test_no_planted_effect_calls_nothing_much():
    adata, samples, sets = make_synthetic(5, planted=False, n_genes=300)
    ks = C.parse_contrasts(CONTRASTS, samples)
    st = C.ContrastSettings.from_config(SETTINGS)
    s = C.score_shifts(adata.obs, ks, st, samples)
    c = C.composition_tests(adata.obs, ks, st, samples)
    assert s["significant"].mean() <= 0.05
    assert c["significant"].mean() <= 0.05


# ---------------------------------------------------------------------------- edge designs
def test_single_replicate_design_reports_no_test(synth):
    adata, samples, sets = synth
    keep = samples.index[samples["replicate"] == 1]
    a = adata[adata.obs["sample"].isin(keep)].copy()
    res = run_all(a, samples.loc[keep], sets)
    for key, table in res.items():
        assert (table["status"] == "no_test").all(), key
        assert table["pvalue"].isna().all(), key
        assert table["note"].str.contains("no test possible").all(), key
        assert not table["significant"].any()
    s = res["shifts"]
    assert s["effect"].notna().all()
    planted = s[_planted_shift(s) & (s["metric"] == "mean")]
    assert (planted["effect"] > 0).all()
    assert res["composition"]["effect"].notna().all()
    assert res["de"]["log2FoldChange"].notna().all()


def test_rare_cell_type_is_skipped_with_reason(synth):
    adata, samples, sets = synth
    obs = adata.obs
    # keep 5 AT2 cells in two lung MSC samples -> only 1 MSC sample has >= 10 AT2 cells
    drop = [i for s in ("lung_MSC_1", "lung_MSC_2")
            for i in obs.index[(obs["cell_type"] == "AT2") & (obs["sample"] == s)][5:]]
    a = adata[~adata.obs_names.isin(drop)].copy()
    ks = C.parse_contrasts(CONTRASTS[:1], samples)
    st = C.ContrastSettings.from_config(SETTINGS)
    s = C.score_shifts(a.obs, ks, st, samples)
    at2 = s[s["cell_type"] == "AT2"]
    assert len(at2) == 8 and (at2["status"] == "skipped").all()
    assert at2["pvalue"].isna().all()
    assert at2["note"].str.contains(r"lung_MSC_1 \(5\)").all()
    assert at2["note"].str.contains("need >= 2 per group").all()
    assert (s.loc[s["cell_type"] != "AT2", "status"] == "tested").all()
    de = C.pseudobulk_de(a[a.obs["cell_type"] == "AT2"].copy(), ks, st, samples)
    assert len(de) == 1 and de["status"].iloc[0] == "skipped" and de["gene"].iloc[0] == ""


def test_confounded_covariate_is_reported_not_tested(synth):
    adata, samples, _ = synth
    sheet = samples.assign(cohort=np.where(samples["condition"] == "MSC", "c1", "c2"))
    a = adata.copy()
    a.obs["cohort"] = a.obs["sample"].map(sheet["cohort"]).to_numpy()
    ks = C.parse_contrasts([{**CONTRASTS[0], "covariates": ["cohort"]}], sheet)
    s = C.score_shifts(a.obs, ks, C.ContrastSettings.from_config({}), sheet)
    assert (s["status"] == "no_test").all()
    assert s["note"].str.contains("confounded").all()


def test_covariate_adjusted_model_runs_and_keeps_planted(synth):
    adata, samples, _ = synth
    ks = C.parse_contrasts([{**CONTRASTS[1], "covariates": ["batch"]}], samples)
    s = C.score_shifts(adata.obs, ks, C.ContrastSettings.from_config({}), samples)
    assert (s["df"] == 3).all() and (s["covariates"] == "batch").all()
    planted = s[_planted_shift(s) & (s["metric"] == "mean")]
    assert (planted["effect"] > 0).all() and (planted["pvalue"] < 0.05).all()


# ---------------------------------------------------------------------------- determinism / io
@pytest.mark.slow
def test_results_identical_between_reruns(synth, results):
    again = run_all(*synth)
    for key in results:
        pd.testing.assert_frame_equal(results[key], again[key], check_exact=True)


def test_pseudobulk_counts_sum_to_layer(synth):
    adata, _, _ = synth
    counts, groups = C.pseudobulk_counts(adata)
    assert counts.to_numpy().sum() == adata.layers["counts"].sum()
    assert groups["n_cells"].sum() == adata.n_obs
    bad = adata.copy()
    bad.layers["counts"] = bad.layers["counts"].astype(float) * 0.5
    with pytest.raises(ValueError, match="non-integer"):
        C.pseudobulk_counts(bad)


def _qc_files(adata, folder: Path) -> list[Path]:
    """Per-sample files laid out as results/qc/{sample}.h5ad: raw counts in X, the sample's
    cells in another order plus one cell the merged data dropped, genes reversed plus one
    the merge left out."""
    paths = []
    for i, sample in enumerate(adata.obs["sample"].unique()):
        part = adata[adata.obs["sample"] == sample]
        x = sp.hstack([part.layers["counts"], sp.csr_matrix(np.ones((part.n_obs, 1)))])
        extra = sp.csr_matrix(np.full((1, adata.n_vars + 1), 7.0))
        qc = ad.AnnData(X=sp.vstack([x, extra]).tocsr().astype(np.float32),
                        obs=pd.DataFrame(index=[*part.obs_names, f"{sample}:dropped"]),
                        var=pd.DataFrame(index=[*adata.var_names, "only_in_qc"]))
        order = np.random.default_rng(i).permutation(qc.n_obs)
        qc = qc[order, np.arange(qc.n_vars)[::-1]].copy()
        paths.append(folder / f"{sample}.h5ad")
        qc.write_h5ad(paths[-1])
    return paths


def test_pseudobulk_from_qc_files_equals_pseudobulk_of_the_counts_layer(synth, tmp_path):
    """The rule sums counts read from the per-sample QC files (the annotated file keeps no
    counts): the same tables, cell for cell, as summing a counts layer."""
    from mscflow.inputs.sample_counts import counts_matrix

    adata, _, _ = synth
    paths = _qc_files(adata, tmp_path)
    expected = C.pseudobulk_counts(adata)
    got = C.pseudobulk_counts_from_files(adata.obs, adata.var_names, paths)
    pd.testing.assert_frame_equal(got[0], expected[0], check_exact=True)
    pd.testing.assert_frame_equal(got[1], expected[1], check_exact=True)
    counts = counts_matrix(paths, adata.obs_names, adata.var_names)
    assert (counts != adata.layers["counts"]).nnz == 0 and counts.dtype == np.float32
    with pytest.raises(ValueError, match=r"lacks genes of the merged data \(e\.g\. \['nope'\]"):
        counts_matrix(paths, adata.obs_names, pd.Index([*adata.var_names, "nope"]))
    with pytest.raises(ValueError, match="hold .* of the .* cells .*rerun the workflow"):
        counts_matrix(paths[1:], adata.obs_names, adata.var_names)


def test_gsea_stage_tests_exactly_the_library_sets(tmp_path, results):
    """GSEA reads the run's gene-set library: its programme sets (genes of weight > 0),
    nothing else; gsea.sets picks some of them and must name library sets."""
    from mscflow.genesets import GeneSetLibrary

    genes = [f"Gene{i}" for i in range(60)]
    library = GeneSetLibrary("mouse", {
        "efferocytosis_combined": {g: 1.0 for g in genes[:25]},
        "weighted": {**{g: 2.0 for g in genes[30:45]}, "Gene59": -1.0},
    }, {"marker_a": {"Gene1": 1.0}}, pd.DataFrame())
    (tmp_path / "library.json").write_text(library.to_json())
    de = results["de"][results["de"]["cell_type"] == "macrophage"]
    de.to_parquet(tmp_path / "de.parquet")
    settings = {"gsea": {"permutations": 20}}
    out = C.gsea_stage(tmp_path / "de.parquet", tmp_path / "library.json", settings)
    table = out["tsv"]
    assert out["parquet"] is table
    assert set(table["gene_set"]) == {"efferocytosis_combined", "weighted"}
    assert table.groupby("gene_set")["set_size"].first().to_dict() == {
        "efferocytosis_combined": 25, "weighted": 15}
    assert (table["status"] == "tested").all()
    with pytest.raises(ConfigError, match="gsea.sets.*'null_a'.*scoring.sets"):
        C.gsea_stage(tmp_path / "de.parquet", tmp_path / "library.json",
                     {"gsea": {"sets": ["null_a"]}})


def test_write_tables_roundtrip(tmp_path, results):
    df = results["composition"]
    C.write_tables({"tsv": df, "parquet": df},
                   {"tsv": tmp_path / "c.tsv", "parquet": tmp_path / "c.parquet"})
    back = pd.read_parquet(tmp_path / "c.parquet")
    pd.testing.assert_frame_equal(back, df)
    tsv = pd.read_csv(tmp_path / "c.tsv", sep="\t")
    assert list(tsv.columns) == list(df.columns) and len(tsv) == len(df)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.parquet", "c.tsv"]


def test_tsv_bytes_match_the_old_writer(tmp_path):
    """Same bytes as the former contrast.write_table (NaN as NA, %.6g, no index)."""
    df = pd.DataFrame({"cell_type": ["AT2", "T cell"], "n": [3, 12],
                       "effect": [0.123456789, -1e-7], "pvalue": [np.nan, 2.5e-12],
                       "significant": [False, True], "note": ["", "a; b"]})
    C.write_tables({"tsv": df}, {"tsv": tmp_path / "t.tsv"})
    assert (tmp_path / "t.tsv").read_text() == (
        "cell_type\tn\teffect\tpvalue\tsignificant\tnote\n"
        "AT2\t3\t0.123457\tNA\tFalse\t\n"
        "T cell\t12\t-1e-07\t2.5e-12\tTrue\ta; b\n"
    )


def test_plots_render(tmp_path, results, synth):
    from mscflow.contrast import plots as P

    _, _, sets = synth
    fig = P.forest_plot(results["shifts"])
    assert len(fig.axes) == 2
    save(fig, tmp_path / "forest.png", dpi=120)
    props = C.composition_counts(synth[0].obs)
    fig = P.composition_bars(props, results["composition"])
    liver = next(ax for ax in fig.axes if ax.get_title() == "liver")
    legend = [t.get_text() for t in liver.get_legend().get_texts()]
    assert "MoMF *" in legend
    save(fig, tmp_path / "comp.png", dpi=120)
    fig = P.volcano_plot(results["de"], "liver_MSC_vs_control")
    assert sum(ax.axison for ax in fig.axes) == 5
    save(fig, tmp_path / "volcano.png", dpi=120)
    names = C.gsea_sets_for_plot(results["gsea"], ["efferocytosis", "il10"])
    assert names == list(PLANTED_SETS)
    fig = P.gsea_enrichment_plot(results["de"], results["gsea"], sets,
                                 "lung_MSC_vs_control", names)
    assert len(fig.axes) == 4 * 2
    save(fig, tmp_path / "gsea.png", dpi=120)
    for f in ("forest", "comp", "volcano", "gsea"):
        assert (tmp_path / f"{f}.png").stat().st_size > 5000


def test_schema_defaults_fill_the_settings():
    props = section_schema("contrast_settings")["properties"]
    cfg = {k: v["default"] for k, v in props.items() if "default" in v}
    for nested in ("gsea", "pseudobulk"):
        cfg[nested] = {k: v["default"] for k, v in props[nested]["properties"].items()}
    st = C.ContrastSettings.from_config({})
    assert C.ContrastSettings.from_config(cfg) == st
    assert st.to_config() == cfg


def test_excluded_cell_types_and_score_sets_are_reported(synth):
    adata, samples, _ = synth
    ks = C.parse_contrasts(CONTRASTS[:1], samples)
    st = C.ContrastSettings.from_config({"exclude_cell_types": ["AT2"],
                                         "score_sets": ["null_a"]})
    s = C.score_shifts(adata.obs, ks, st, samples)
    assert set(s["gene_set"]) == {"null_a"}
    at2 = s[s["cell_type"] == "AT2"]
    assert len(at2) == 2 and (at2["status"] == "skipped").all()
    assert at2["note"].str.contains("exclude_cell_types").all()
    c = C.composition_tests(adata.obs, ks, st, samples)
    assert c.loc[c["cell_type"] == "AT2", "status"].item() == "skipped"
    with pytest.raises(ValueError, match="score_sets.*score_nope"):
        C.score_shifts(adata.obs, ks, C.ContrastSettings.from_config({"score_sets": ["nope"]}),
                       samples)
