"""The communication stage on synthetic samples: liana per sample, the expression tables,
focus axes, the replicate tests of interactions, bad input and the plots."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from helpers import TABULA_MURIS

from mscflow.communication.contrast import (
    FAMILY_FOCUS,
    TissueInteractions,
    add_response,
    interaction_tests,
    replicate_tests_batched,
)
from mscflow.communication.sample import (
    KEYS,
    CommunicationSettings,
    cell_type_expression,
    communication_sample,
    entity_table,
    load_resource,
    read_sample_cells,
    resolve_focus,
    resource_genes,
)
from mscflow.contrast import (
    Contrast,
    ContrastSettings,
    contrast_designs,
    permute_conditions,
    replicate_tests,
)
from mscflow.errors import ConfigError, InputDataError

FOCUS_GENES = ["Il10", "Il10ra", "Il10rb", "Gas6", "Pros1", "Mertk", "Axl", "Tyro3", "Mfge8",
               "Itgav", "Itgb5", "Cd47", "Sirpa"]
CELL_TYPES = {"momf": 40, "nk_cell": 40, "kupffer_cell": 50, "endothelial": 50, "t_cell": 40,
              "b_cell": 6}
LIVER = Contrast("liver_MSC", "liver", "MSC", "control", ())


@pytest.fixture(scope="module")
def mouse_resource() -> pd.DataFrame:
    return load_resource("mouseconsensus")


@pytest.fixture(scope="module")
def gene_universe(mouse_resource: pd.DataFrame) -> list[str]:
    """Focus genes, every 8th gene of the resource and a few genes outside it."""
    genes = resource_genes(mouse_resource)
    return sorted(set(FOCUS_GENES) | set(genes[::8]) | {"Actb", "Gapdh", "Malat1"})


def synthetic_samples(genes: list[str], *, seed: int = 0, planted: bool = True,
                      replicates: int = 3, upper: bool = False) -> ad.AnnData:
    """Liver samples (control and MSC) of log-normalised counts; in MSC samples MoMF
    raise Il10 4-fold and NK cells Il10ra and Il10rb 3-fold (when ``planted``)."""
    rng = np.random.default_rng(seed)
    base = {ct: rng.gamma(0.6, 2.0, len(genes)) for ct in CELL_TYPES}
    index = {g: i for i, g in enumerate(genes)}
    for ct in ("momf", "kupffer_cell"):
        base[ct][index["Il10"]] = 1.0
    for g in ("Il10ra", "Il10rb"):
        base["nk_cell"][index[g]] = 1.0
    blocks, obs = [], []
    for condition in ("control", "MSC"):
        for rep in range(1, replicates + 1):
            sample = f"liver_{condition}_{rep}"
            sample_effect = np.exp(rng.normal(0, 0.1, len(genes)))
            for ct, n in CELL_TYPES.items():
                rate = base[ct] * sample_effect
                if planted and condition == "MSC":
                    rate = rate.copy()
                    if ct == "momf":
                        rate[index["Il10"]] *= 4.0
                    if ct == "nk_cell":
                        rate[[index["Il10ra"], index["Il10rb"]]] *= 3.0
                counts = rng.poisson(rate * rng.lognormal(0, 0.2, (n, 1)))
                blocks.append(counts)
                obs += [{"sample": sample, "tissue": "liver", "condition": condition,
                         "cell_type": ct}] * n
    counts = np.vstack(blocks).astype(np.float32)
    totals = np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    X = sp.csr_matrix(np.log1p(counts / totals * 1e4).astype(np.float32))
    frame = pd.DataFrame(obs)
    frame.index = [f"c{i}" for i in range(len(frame))]
    names = [g.upper() for g in genes] if upper else genes
    return ad.AnnData(X=X, obs=frame.astype("category"), var=pd.DataFrame(index=names))


def sheet_of(adata: ad.AnnData) -> pd.DataFrame:
    meta = adata.obs[["sample", "tissue", "condition"]].astype(str).drop_duplicates()
    return meta.set_index("sample", drop=False)


def expression_tables(adata: ad.AnnData, genes: list[str]) -> pd.DataFrame:
    parts = []
    for sample in sorted(adata.obs["sample"].astype(str).unique()):
        sub = adata[adata.obs["sample"] == sample]
        sub = sub[sub.obs["cell_type"] != "b_cell"].copy()  # below min_cells
        meta = {"tissue": "liver", "sample": sample,
                "condition": str(sub.obs["condition"].iloc[0])}
        parts.append(cell_type_expression(sub, genes, meta))
    return pd.concat(parts, ignore_index=True)


def assert_lr_means_match_liana(out: dict[str, pd.DataFrame]) -> None:
    """liana's lr_means = the mean of the ligand's and the receptor's means (complexes: the
    weakest subunit) from the sample's expression table."""
    liana = out["liana"]
    ent = entity_table(out["expression"], set(liana["ligand"]) | set(liana["receptor"]),
                       by=["cell_type"]).set_index(["cell_type", "entity"])["mean"]
    sender = ent.reindex(pd.MultiIndex.from_arrays([liana["sender"], liana["ligand"]]))
    receiver = ent.reindex(pd.MultiIndex.from_arrays([liana["receiver"], liana["receptor"]]))
    mine = (sender.to_numpy() + receiver.to_numpy()) / 2
    np.testing.assert_allclose(mine, liana["lr_means"], rtol=1e-5)


def settings(**changes) -> CommunicationSettings:
    return CommunicationSettings.from_config(changes, seed=0)


# --- settings, resource and focus axes ----------------------------------------------------


def test_settings_pick_the_resource_by_species_and_reject_repeated_axes() -> None:
    st = settings()
    assert st.resource_for("mouse") == "mouseconsensus"
    assert st.resource_for("human") == "consensus"
    assert settings(resource="cellphonedb").resource_for("mouse") == "cellphonedb"
    assert [a.name for a in st.axes][:2] == ["IL-10", "PS receptors (TAM)"]
    with pytest.raises(ConfigError, match="no liana resource for species 'zebrafish'"):
        st.resource_for("zebrafish")
    axis = {"name": "IL-10", "ligands": ["Il10"], "receptors": ["Il10ra_Il10rb"]}
    with pytest.raises(ConfigError, match=r"\['IL-10'\] are used more than once"):
        settings(extra_focus_axes=[axis])


def test_settings_are_the_schema_keys_and_round_trip() -> None:
    from mscflow import config as cfg

    fields = {f.name for f in dataclasses.fields(CommunicationSettings)} - {"seed"}
    assert fields == set(cfg.section_schema("communication")["properties"])
    built = settings()
    assert cfg.validate_config({"communication": built.to_config()})["communication"][
        "focus_axes"] == cfg.schema_defaults("communication")["focus_axes"]
    with pytest.raises(ConfigError, match="did you mean 'expr_prop'"):
        settings(expr_prob=0.2)
    with pytest.raises(ConfigError, match="ligands"):
        settings(extra_focus_axes=[{"name": "x", "receptors": ["Sirpa"]}])


def test_unknown_resource_names_the_shipped_ones() -> None:
    with pytest.raises(ConfigError) as err:
        load_resource("mouseconsensos")
    text = str(err.value)
    assert "'mouseconsensos' is not a resource liana" in text
    assert "did you mean 'mouseconsensus'" in text and "'consensus'" in text


def test_default_focus_axes_resolve_to_the_resource_spelling(mouse_resource) -> None:
    focus = resolve_focus(settings().axes, mouse_resource, "mouseconsensus")
    pairs = set(zip(focus.pairs["ligand"], focus.pairs["receptor"], strict=True))
    assert ("Il10", "Il10ra_Il10rb") in pairs
    assert {(lig, rec) for lig in ("Gas6", "Pros1") for rec in ("Mertk", "Axl", "Tyro3")} <= pairs
    assert {("Mfge8", "Itgav"), ("Mfge8", "Itgb5"), ("Cd47", "Sirpa")} <= pairs
    assert len(pairs) == 10 and focus.problems.empty
    il10 = focus.pairs[focus.pairs["ligand"] == "Il10"].iloc[0]
    assert il10["focus_axis"] == "IL-10" and il10["response_set"] == "il10_stat3_response"


def test_focus_problems_are_local(mouse_resource) -> None:
    axes = settings(extra_focus_axes=[
        {"name": "typo", "ligands": ["Il-10", "Il10"], "receptors": ["Il10rb_Il10ra"]},
        {"name": "heterodimer", "ligands": ["Mfge8"], "receptors": ["Itgav_Itgb5"]},
    ]).axes
    focus = resolve_focus(axes, mouse_resource, "mouseconsensus", genes=["Il10", "Il10ra"])
    reasons = " | ".join(focus.problems["reason"])
    assert "ligand 'Il-10' is not a ligand of resource 'mouseconsensus'" in reasons
    assert "(did you mean 'Il10'" in reasons
    assert "Mfge8 -> Itgav_Itgb5 is not a pair of resource" in reasons
    # the subunit order is loose; Il10rb is not in the data, so the pair cannot be scored
    assert "gene(s) ['Il10rb'] are not in the data" in reasons
    assert set(focus.problems["kind"]) >= {"focus_gene", "focus_pair", "focus_axis"}


def test_human_resource_takes_the_mouse_spelled_defaults() -> None:
    human = load_resource("consensus")
    focus = resolve_focus(settings().axes, human, "consensus")
    pairs = set(zip(focus.pairs["ligand"], focus.pairs["receptor"], strict=True))
    assert ("IL10", "IL10RA_IL10RB") in pairs and ("GAS6", "MERTK") in pairs
    assert ("CD47", "SIRPA") in pairs and focus.problems.empty


def test_entity_table_takes_the_weakest_subunit() -> None:
    expr = pd.DataFrame({"sample": "s", "cell_type": "nk", "gene": ["A", "B", "C"],
                         "mean": [1.0, 0.5, 2.0], "frac": [0.2, 0.9, 0.4]})
    table = entity_table(expr, ["A_B", "C", "A_D"]).set_index("entity")
    assert table.loc["A_B", "mean"] == 0.5 and table.loc["A_B", "frac"] == 0.2
    assert table.loc["C", "mean"] == 2.0
    assert "A_D" not in table.index  # D is not measured


# --- liana per sample ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def mouse_data(gene_universe) -> ad.AnnData:
    return synthetic_samples(gene_universe)


def test_sample_stage_matches_liana_and_lists_skipped_types(mouse_data, mouse_resource,
                                                            tmp_path: Path) -> None:
    path = tmp_path / "annotated.h5ad"
    mouse_data.write_h5ad(path)
    cells = read_sample_cells(path, "liver_MSC_1")
    assert cells.n_obs == sum(CELL_TYPES.values())
    assert read_sample_cells(path, "nowhere") is None
    st = settings(n_perms=20)
    out = communication_sample(cells, mouse_resource, st, sample="liver_MSC_1",
                               resource_name="mouseconsensus")
    skipped = out["skipped"]
    assert skipped[["kind", "cell_type", "n_cells"]].values.tolist() == [
        ["cell_type", "b_cell", 6]]
    assert "communication.min_cells (10)" in skipped["reason"].item()
    liana = out["liana"]
    assert {"magnitude_rank", "specificity_rank", "lr_means", "lr_props"} <= set(liana.columns)
    assert "b_cell" not in set(liana["sender"]) | set(liana["receiver"])
    assert (liana["lr_props"] >= st.expr_prop).all()
    assert_lr_means_match_liana(out)
    row = liana[(liana["sender"] == "momf") & (liana["receiver"] == "nk_cell")
                & (liana["ligand"] == "Il10")]
    assert row["receptor"].tolist() == ["Il10ra_Il10rb"]
    again = communication_sample(cells, mouse_resource, st, sample="liver_MSC_1",
                                 resource_name="mouseconsensus")
    pd.testing.assert_frame_equal(out["liana"], again["liana"])  # seeded: identical


def test_sample_without_cells_or_with_one_type_is_listed(mouse_data, mouse_resource) -> None:
    st = settings()
    out = communication_sample(None, mouse_resource, st, sample="gone",
                               resource_name="mouseconsensus")
    assert out["liana"].empty and out["expression"].empty
    assert "no annotated cells" in out["skipped"]["reason"].item()
    one = mouse_data[(mouse_data.obs["sample"] == "liver_MSC_1")
                     & mouse_data.obs["cell_type"].isin(["momf", "b_cell"])].copy()
    out = communication_sample(one, mouse_resource, st, sample="liver_MSC_1",
                               resource_name="mouseconsensus")
    assert out["liana"].empty and not out["expression"].empty
    assert "liana needs two or more" in " ".join(out["skipped"]["reason"])


def test_bad_input_stops_with_clear_messages(mouse_data, mouse_resource, gene_universe) -> None:
    sample = mouse_data[mouse_data.obs["sample"] == "liver_MSC_1"].copy()
    counts = sample.copy()
    counts.X = sp.csr_matrix(np.round(np.expm1(counts.X.toarray())))
    with pytest.raises(InputDataError, match="needs log-normalised X"):
        communication_sample(counts, mouse_resource, settings(), sample="liver_MSC_1",
                             resource_name="mouseconsensus")
    human = synthetic_samples(gene_universe, upper=True, replicates=1)
    human = human[human.obs["sample"] == "liver_MSC_1"].copy()
    with pytest.raises(InputDataError, match="different species or symbol styles"):
        communication_sample(human, mouse_resource, settings(), sample="liver_MSC_1",
                             resource_name="mouseconsensus")


def test_human_data_run_with_the_human_resource(gene_universe) -> None:
    human = synthetic_samples(gene_universe, upper=True, replicates=1)
    human = human[human.obs["sample"] == "liver_MSC_1"].copy()
    st = settings(n_perms=None)
    name = st.resource_for("human")
    out = communication_sample(human, load_resource(name), st, sample="liver_MSC_1",
                               resource_name=name)
    liana = out["liana"]
    hit = liana[(liana["sender"] == "momf") & (liana["receiver"] == "nk_cell")
                & (liana["ligand"] == "IL10")]
    assert hit["receptor"].tolist() == ["IL10RA_IL10RB"]
    assert "specificity_rank" not in liana.columns  # n_perms: null skips permutations


# --- replicate tests of interactions ------------------------------------------------------


@pytest.fixture(scope="module")
def liver_tests(mouse_data, gene_universe, mouse_resource):
    expr = expression_tables(mouse_data, gene_universe)
    focus = resolve_focus(settings().axes, mouse_resource, "mouseconsensus").pairs
    sheet = sheet_of(mouse_data)
    table, per_sample = interaction_tests(expr, sheet, [LIVER], ContrastSettings.from_config({}),
                                          settings(), mouse_resource, focus)
    return expr, focus, sheet, table, per_sample


def test_planted_il10_axis_is_found_up_in_the_focus_family(liver_tests) -> None:
    _, _, _, table, per_sample = liver_tests
    hit = table[(table["sender"] == "momf") & (table["receiver"] == "nk_cell")
                & (table["ligand"] == "Il10") & (table["metric"] == "lr_means")]
    assert len(hit) == 1
    row = hit.iloc[0]
    assert row["fdr_family"] == FAMILY_FOCUS and row["focus_axis"] == "IL-10"
    assert row["status"] == "tested" and row["significant"] and row["effect"] > 0
    assert row["n_samples_condition"] == 3 and row["n_samples_reference"] == 3
    assert row["ci_low"] > 0
    # focus rows come first; b_cell (6 cells) is in no test
    assert (table["fdr_family"].iloc[:10] == FAMILY_FOCUS).all()
    assert "b_cell" not in set(table["sender"]) | set(table["receiver"])
    units = per_sample[(per_sample["sender"] == "momf") & (per_sample["receiver"] == "nk_cell")
                       & (per_sample["ligand"] == "Il10")]
    assert len(units) == 6 and set(units["contrast"]) == {"liver_MSC"}


def test_unexpressed_focus_pairs_are_reported_not_tested(liver_tests) -> None:
    _, _, _, table, _ = liver_tests
    focus = table[table["fdr_family"] == FAMILY_FOCUS]
    skipped = focus[focus["status"] == "skipped"]
    assert len(skipped) and skipped["pvalue"].isna().all()
    assert skipped["note"].str.contains("need >= 3: not tested").all()
    # every other row passed the label-blind expression filter
    other = table[table["fdr_family"] != FAMILY_FOCUS]
    assert (other["n_samples_expressed"] >= 3).all()


def test_permuted_labels_call_few_interactions(mouse_data, gene_universe, mouse_resource,
                                               liver_tests) -> None:
    expr, focus, sheet, _, _ = liver_tests
    called = []
    for seed in range(3):
        permuted = permute_conditions(sheet, seed)
        table, _ = interaction_tests(expr, permuted, [LIVER], ContrastSettings.from_config({}),
                                     settings(), mouse_resource, focus)
        tested = table[table["status"] == "tested"]
        called.append(tested["significant"].mean())
    assert max(called) <= 0.05, called


def test_no_planted_effect_calls_few_interactions(gene_universe, mouse_resource) -> None:
    null = synthetic_samples(gene_universe, seed=1, planted=False)
    expr = expression_tables(null, gene_universe)
    focus = resolve_focus(settings().axes, mouse_resource, "mouseconsensus").pairs
    table, _ = interaction_tests(expr, sheet_of(null), [LIVER],
                                 ContrastSettings.from_config({}), settings(), mouse_resource,
                                 focus)
    tested = table[table["status"] == "tested"]
    assert len(tested) > 100 and tested["significant"].mean() <= 0.05


def test_focus_restrictions_and_absent_senders(liver_tests, mouse_resource) -> None:
    from mscflow.communication.contrast import focus_problems_in_tissues

    expr, _, sheet, _, _ = liver_tests
    axes = settings(focus_axes=[{"name": "IL-10", "ligands": ["Il10"],
                                 "receptors": ["Il10ra_Il10rb"],
                                 "senders": ["momf", "alveolar_macrophage"],
                                 "receivers": ["nk_cell"]}]).axes
    focus = resolve_focus(axes, mouse_resource, "mouseconsensus").pairs
    types = {"liver": set(expr["cell_type"])}
    problems = focus_problems_in_tissues(focus, types, {"il10_stat3_response"})
    assert problems["kind"].tolist() == ["focus_cell_type"]
    assert "sender cell type 'alveolar_macrophage' of focus axis 'IL-10' has no cells in " \
           "tissue 'liver'" in problems["reason"].item()
    table, _ = interaction_tests(expr, sheet, [LIVER], ContrastSettings.from_config({}),
                                 settings(), mouse_resource, focus)
    units = table[table["fdr_family"] == FAMILY_FOCUS].drop_duplicates(KEYS)
    assert units[["sender", "receiver"]].values.tolist() == [["momf", "nk_cell"]]


def test_usage_and_focus_pair_tables_list_every_row(liver_tests, mouse_resource) -> None:
    from mscflow.communication.contrast import cell_type_usage, focus_pair_table

    expr = liver_tests[0]
    left_out = pd.DataFrame([{"kind": "cell_type", "tissue": "liver", "sample": "liver_MSC_1",
                              "cell_type": "b_cell", "n_cells": 6, "focus_axis": "",
                              "reason": "6 cell(s) < communication.min_cells (10)"}])
    usage = cell_type_usage(expr, left_out)
    assert len(usage) == 6 * 5 + 1 and usage["used"].sum() == 30
    assert usage[~usage["used"]]["cell_type"].tolist() == ["b_cell"]
    axes = settings(extra_focus_axes=[{"name": "typo", "ligands": ["Gas7"],
                                       "receptors": ["Mertk"]}]).axes
    focus = resolve_focus(axes, mouse_resource, "mouseconsensus")
    table = focus_pair_table(focus.pairs, focus.problems)
    assert (table["status"] == "used").sum() == 10
    assert set(table.loc[table["focus_axis"] == "typo", "status"]) == {"focus_gene",
                                                                      "focus_axis"}


def test_response_shift_sits_beside_the_il10_rows(liver_tests) -> None:
    _, _, _, table, _ = liver_tests
    shifts = pd.DataFrame({
        "contrast": "liver_MSC", "cell_type": ["nk_cell", "nk_cell", "momf"],
        "gene_set": "il10_stat3_response", "metric": ["mean", "frac_above", "mean"],
        "effect": [0.4, 0.1, 0.0], "ci_low": [0.2, 0.0, -0.1], "ci_high": [0.6, 0.2, 0.1],
        "padj": [0.001, 0.2, 0.9], "status": "tested"})
    out = add_response(table, shifts)
    il10 = out[(out["ligand"] == "Il10") & (out["receiver"] == "nk_cell")]
    assert (il10["response_set"] == "il10_stat3_response").all()
    assert (il10["response_effect"] == 0.4).all() and (il10["response_padj"] == 0.001).all()
    other = out[out["ligand"] != "Il10"]
    assert other["response_effect"].isna().all() and (other["response_set"] == "").all()
    for no_shifts in (None, shifts.iloc[:0]):  # e.g. a panel without the response set
        out = add_response(table, no_shifts)
        assert out.columns.is_unique and out["response_effect"].isna().all()


def test_batched_tests_equal_replicate_tests() -> None:
    """Same rows as mscflow.contrast.replicate_tests, covariates and dropped samples included."""
    rng = np.random.default_rng(3)
    samples = [f"s{i}" for i in range(8)]
    sheet = pd.DataFrame({"sample": samples, "tissue": "liver",
                          "condition": ["MSC"] * 4 + ["control"] * 4,
                          "batch": ["a", "b"] * 4}).set_index("sample", drop=False)
    rows = []
    for unit in range(40):
        for i, s in enumerate(samples):
            cells = 3 if (unit % 5 == 0 and i == 2) else 30  # some units drop a sample
            rows.append({"tissue": "liver", "sample": s, "sender": f"t{unit % 4}",
                         "receiver": "r", "ligand": f"L{unit}", "receptor": "R",
                         "n_cells": cells, "lr_means": rng.normal(unit % 3, 1),
                         "lr_props": rng.uniform()})
    values = pd.DataFrame(rows)
    st = dataclasses.replace(ContrastSettings.from_config({}), exclude_cell_types=())
    for covariates in ((), ("batch",)):
        contrast = Contrast("c", "liver", "MSC", "control", covariates)
        cd = next(contrast_designs(sheet, sheet, [contrast], 2))
        ref = replicate_tests(values, [cd], st, units=KEYS, metrics=("lr_means", "lr_props"),
                              label_columns=KEYS, exclude_columns=())
        ours = replicate_tests_batched(values, cd, st, units=KEYS,
                                       metrics=("lr_means", "lr_props"))
        keys = [*KEYS, "metric"]
        ref = ref.drop(columns=["padj", "significant"]).sort_values(keys).reset_index(drop=True)
        ours = ours.sort_values(keys).reset_index(drop=True)
        assert (ours["note"] != "").sum() == 16  # the dropped samples went the slow way
        pd.testing.assert_frame_equal(ours, ref, check_dtype=False, rtol=1e-9, atol=1e-12)


def test_batched_tests_call_constant_values_no_test() -> None:
    sheet = pd.DataFrame({"sample": list("abcdef"), "tissue": "liver",
                          "condition": ["MSC"] * 3 + ["control"] * 3}).set_index("sample",
                                                                               drop=False)
    values = pd.DataFrame({"tissue": "liver", "sample": list("abcdef"), "sender": "x",
                           "receiver": "y", "ligand": "L", "receptor": "R", "n_cells": 50,
                           "lr_means": [1.0, 1.1, 1.2, 0.5, 0.6, 0.4], "lr_props": 1.0})
    cd = next(contrast_designs(sheet, sheet, [Contrast("c", "liver", "MSC", "control", ())], 2))
    st = ContrastSettings.from_config({})
    out = replicate_tests_batched(values, cd, st, units=KEYS, metrics=("lr_means", "lr_props"))
    props = out[out["metric"] == "lr_props"].iloc[0]
    assert props["status"] == "no_test" and np.isnan(props["pvalue"])
    assert out[out["metric"] == "lr_means"]["status"].item() == "tested"


def test_tissue_interactions_keep_counts_of_left_out_types(gene_universe, mouse_data,
                                                            mouse_resource) -> None:
    expr = expression_tables(mouse_data, gene_universe)
    counts = pd.DataFrame({"sample": "liver_MSC_1", "tissue": "liver", "cell_type": ["b_cell"],
                           "n_cells": [6]})
    data = TissueInteractions.build(expr, mouse_resource, counts)
    assert "b_cell" not in data.cell_types  # no expression: never a unit
    assert data.lr_means.shape[:3] == (6, 5, 5)
    i = data.cell_types.index("momf")
    assert (data.n_cells[:, i] == 40).all()


# --- plots -----------------------------------------------------------------------------------


def test_focus_plots_draw_the_tested_axes(liver_tests) -> None:
    from mscflow.communication.plots import focus_dotplot, focus_heatmap, focus_units

    _, _, _, table, _ = liver_tests
    units = focus_units(table, "liver_MSC")
    assert {"means_reference", "means_condition", "props_condition"} <= set(units.columns)
    dot = focus_dotplot(table, "liver_MSC", max_pairs=5)
    assert len(dot.axes[0].get_xticklabels()) == 5
    heat = focus_heatmap(table, "liver_MSC")
    titles = [ax.get_title() for ax in heat.axes]
    assert any(t.startswith("Il10 \u2192 Il10ra_Il10rb") for t in titles)
    empty = focus_dotplot(table, "no_such_contrast")
    assert "no focus interaction" in empty.axes[0].texts[0].get_text()


# --- real data ----------------------------------------------------------------------------


@pytest.mark.slow
def test_tabula_muris_lung_channel_runs_with_real_symbols(mouse_resource) -> None:
    """625 real lung cells, 23k genes with 2017-era symbols: coverage, liana and the
    expression tables agree; small clusters are listed, not dropped silently."""
    import scanpy as sc

    from mscflow.inputs.readers import read_sample

    adata = read_sample(TABULA_MURIS, "10x_mtx", sample="tm")
    adata = adata[adata.obs_names != adata.obs_names[adata.X.sum(axis=1).A1.argmax()]].copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.pca(adata, n_comps=20, random_state=0)
    sc.pp.neighbors(adata, random_state=0)
    sc.tl.leiden(adata, resolution=1.0, random_state=0, flavor="igraph", n_iterations=2)
    adata.obs = adata.obs.assign(sample="tm", tissue="lung", condition="untreated",
                                 cell_type="cluster_" + adata.obs["leiden"].astype(str))
    out = communication_sample(adata, mouse_resource, settings(n_perms=None, min_cells=20),
                               sample="tm", resource_name="mouseconsensus")
    liana = out["liana"]
    assert len(liana) > 1000
    small = out["skipped"]
    assert (small["n_cells"] < 20).all()
    assert set(small["cell_type"]).isdisjoint(set(liana["sender"]))
    assert_lr_means_match_liana(out)
