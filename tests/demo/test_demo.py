"""The demo generator: deterministic, all formats, the sheet the config ships, and its truth."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mscflow.demo.model import DOUBLET_KINDS, SIMILAR_PAIRS, DemoModel, DemoSpec, batch_of
from mscflow.demo.simulate import generate_demo
from mscflow.genesets import read_gmt
from mscflow.inputs.readers import read_sample

REPO = Path(__file__).resolve().parents[2]
SETS = REPO / "resources" / "genesets"


def _gene_sets() -> tuple[dict, dict]:
    return (read_gmt(SETS / "programmes_mouse.gmt"),
            read_gmt(SETS / "celltype_markers_mouse.gmt"))


def _generate(root: Path) -> pd.DataFrame:
    return generate_demo(root / "resources" / "demo", *_gene_sets(),
                         DemoSpec(cells_per_sample=120))


def _digests(folder: Path) -> dict[str, str]:
    """Hashes of the generated files (the sheet holds absolute paths; h5ad is checked by
    reading it back)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix != ".h5ad" and p.name != "samples.tsv"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("demo")
    return root, _generate(root)


@pytest.fixture(scope="module")
def model() -> DemoModel:
    return DemoModel(DemoSpec(), *_gene_sets(), np.random.default_rng(0))


def _read(root: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(root / "resources" / "demo" / name, sep="\t")


def test_sheet_is_the_one_the_config_ships(demo) -> None:
    root, sheet = demo
    shipped = pd.read_csv(REPO / "config" / "samples.tsv", sep="\t", dtype=str,
                          keep_default_na=False)
    written = pd.read_csv(root / "resources" / "demo" / "samples.tsv", sep="\t", dtype=str,
                          keep_default_na=False)
    written["path"] = written["path"].str.replace(str(root) + "/", "", regex=False)
    pd.testing.assert_frame_equal(written, shipped)
    assert set(sheet["format"]) == {"10x_mtx", "10x_h5", "h5ad"}


def test_every_sample_reads_back_with_its_truth(demo) -> None:
    root, sheet = demo
    truth = _read(root, "truth.tsv.gz")
    for _, row in sheet.iterrows():
        adata = read_sample(row["path"], row["format"], sample=row["sample"],
                            layer=row["layer"] or None)
        cells = truth[truth["sample"] == row["sample"]]
        assert adata.n_obs == len(cells) == 120
        assert list(adata.obs_names) == cells["barcode"].tolist()
        assert (cells["batch"] == row["batch"]).all()
        assert {"Cd68", "Mertk", "Il10", "Il10ra", "Gas6", "mt-Co1"} <= set(adata.var_names)
    assert truth["low_quality"].mean() == pytest.approx(0.06, abs=0.03)
    assert truth["doublet"].mean() == pytest.approx(0.05, abs=0.03)


def test_batches_are_balanced_across_tissues_and_conditions() -> None:
    spec = DemoSpec()
    design = pd.DataFrame([
        {"tissue": t, "condition": c, "batch": batch_of(spec, t, c, r)}
        for t in spec.tissues for c in spec.conditions for r in range(1, spec.replicates + 1)])
    for column in ("tissue", "condition"):
        counts = pd.crosstab(design[column], design["batch"])
        assert (counts == spec.replicates).all().all(), counts
    per_group = design.groupby(["tissue", "condition"])["batch"].nunique()
    assert (per_group == len(spec.batches)).all()


def test_batches_shift_only_genes_without_a_planted_effect(model: DemoModel) -> None:
    spec = model.spec
    shifted = np.zeros(len(model.genes), bool)
    shifted[model.batch_genes] = True
    assert not (shifted & model.planted_genes).any()
    assert not (shifted & model.is_mito).any()
    eligible = (~model.is_mito & ~model.planted_genes).sum()
    assert shifted.sum() == round(spec.batch_gene_fraction * eligible)
    ratio = np.log(model.batch_factors["b1"] / model.batch_factors["b2"])[shifted]
    assert ratio.std() == pytest.approx(np.sqrt(2) * spec.batch_log_sd, rel=0.15)
    assert (model.batch_factors["b1"][~shifted] == 1).all()


def test_doublet_truth_names_kind_partner_and_gain(demo) -> None:
    root, _ = demo
    truth = _read(root, "truth.tsv.gz")
    doublets = truth[truth["doublet"]]
    assert set(doublets["doublet_kind"]) <= set(DOUBLET_KINDS)
    assert doublets["doublet_gain"].between(1.2, 2.0).all()
    assert truth.loc[~truth["doublet"], "doublet_gain"].isna().all()
    similar = {frozenset(p) for p in SIMILAR_PAIRS}
    for row in doublets.itertuples():
        pair = frozenset((row.cell_type, row.doublet_partner))
        if row.doublet_kind == "homotypic":
            assert row.cell_type == row.doublet_partner
        else:
            assert (pair in similar) == (row.doublet_kind == "heterotypic_similar"), row
            assert row.cell_type != row.doublet_partner


def test_continuum_positions_follow_the_cell_type_rule(demo) -> None:
    root, _ = demo
    truth = _read(root, "truth.tsv.gz")
    liver = truth["sample"].str.startswith("liver")
    on_lineage = liver & truth["cell_type"].isin(["classical_monocyte", "momf"])
    position = truth["trajectory_position"]
    assert position[on_lineage].notna().all() and position[~on_lineage].isna().all()
    assert position[on_lineage].between(0, 1).all()
    monocytes = on_lineage & (truth["cell_type"] == "classical_monocyte")
    assert (position[monocytes] < 0.5).all() and (position[on_lineage & ~monocytes] >= 0.5).all()


def test_continuum_raises_il10_genes_in_the_last_third_and_msc_sits_later(
        model: DemoModel) -> None:
    flat = DemoModel(replace(model.spec, trajectory_il10_fold=1.0), *_gene_sets(),
                     np.random.default_rng(0))
    for position in (0.1, 0.5, 2 / 3):
        np.testing.assert_allclose(model.profile("liver", "MSC", "momf", position),
                                   flat.profile("liver", "MSC", "momf", position))
    for position, expected in ((5 / 6, 0.5), (1.0, 1.0)):
        with np.errstate(divide="ignore", invalid="ignore"):  # mitochondrial genes: 0 / 0
            rise = np.log(model.profile("liver", "control", "momf", position)
                          / flat.profile("liver", "control", "momf", position))
        ramp = rise[model.ramp_genes] - np.median(rise[~model.ramp_genes & ~model.is_mito])
        np.testing.assert_allclose(ramp, expected * np.log(model.spec.trajectory_il10_fold))
    assert {"Il10", "Il10ra", "Il10rb"} <= {model.genes[i] for i in np.flatnonzero(
        model.ramp_genes)}
    rng = np.random.default_rng(1)
    positions = {c: np.mean([model.draw_position("liver", c, "momf", rng) for _ in range(400)])
                 for c in ("control", "MSC")}
    assert positions["MSC"] > positions["control"] + 0.03
    assert np.isnan(model.draw_position("lung", "MSC", "momf", rng))


def test_planted_score_effects_say_what_changes_where(demo) -> None:
    root, _ = demo
    table = _read(root, "planted_score_effects.tsv").set_index(
        ["tissue", "cell_type", "gene_set"])["status"]
    assert set(table) <= {"planted", "partial", "unchanged"}
    for receiver in ("nk_cell", "neutrophil"):
        assert table["liver", receiver, "il10_stat3_response"] == "planted"
        assert table["lung", receiver, "il10_stat3_response"] == "unchanged"
    for tissue, macrophage in (("lung", "alveolar_macrophage"), ("liver", "kupffer_cell")):
        assert table[tissue, macrophage, "efferocytosis_combined"] == "planted"
    assert table["lung", "t_cell", "efferocytosis_combined"] == "unchanged"
    assert table["liver", "classical_monocyte", "il10_ligand_receptor"] == "unchanged"


def test_planted_interactions_use_liana_names_and_raise_both_sides(demo) -> None:
    root, _ = demo
    table = _read(root, "planted_interactions.tsv")
    il10 = table[(table["ligand"] == "Il10")]
    assert set(il10["receptor"]) == {"Il10ra_Il10rb"}
    assert set(il10["receiver"]) == {"nk_cell", "neutrophil"} and set(il10["tissue"]) == {
        "liver"}
    lung = table[table["tissue"] == "lung"]
    assert set(lung["ligand"]) == {"Gas6", "Pros1"}
    assert set(lung["receptor"]) == {"Mertk", "Axl", "Tyro3"}
    assert (table["direction"] == "up").all()
    assert (table[["ligand_fold", "receptor_fold"]] > 1.5).all().all()
    genes = _read(root, "planted_gene_effects.tsv")
    am = genes[(genes["tissue"] == "lung") & (genes["cell_type"] == "alveolar_macrophage")]
    assert am.set_index("gene").loc[["Mertk", "Axl", "Cd36"], "fold"].min() == pytest.approx(3)


def test_spec_json_records_every_parameter_and_the_design(demo) -> None:
    root, sheet = demo
    meta = json.loads((root / "resources" / "demo" / "spec.json").read_text())
    for key in ("batch_log_sd", "batch_gene_fraction", "batch_library_factors",
                "doublet_kind_shares", "doublet_gain_range", "momf_position_beta",
                "il10_receptor_fold", "bridging_sender", "trajectory_il10_fold"):
        assert key in meta, key
    assert meta["sample_batches"] == dict(zip(sheet["sample"], sheet["batch"], strict=True))
    assert {e["name"] for e in meta["gene_effects"]} >= {"macrophage_programme", "il10_ligand",
                                                         "il10_receptor", "il10_response",
                                                         "ps_receptor", "bridging_ligand"}


@pytest.mark.parametrize("change, message", [
    ({"batch_library_factors": (1.0,)}, "batch_library_factors"),
    ({"doublet_gain_range": (0.5, 2.0)}, "doublet_gain_range"),
    ({"doublet_kind_shares": {"homotypic": 0.5}}, "doublet_kind_shares"),
    ({"momf_position_beta": ((2.0, 2.0),)}, "momf_position_beta"),
    ({"tissues": ("kidney",)}, "kidney"),
])
def test_impossible_specs_are_refused_with_the_parameter_named(change, message) -> None:
    with pytest.raises(ValueError, match=message):
        DemoSpec(**change).check()


def test_generator_is_deterministic(demo, tmp_path: Path) -> None:
    root, _ = demo
    _generate(tmp_path)
    assert _digests(tmp_path / "resources" / "demo") == _digests(root / "resources" / "demo")
