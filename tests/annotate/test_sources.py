"""Annotation sources besides the markers (issue 31): the authors' labels mapped by the
shipped name table, celltypist reference models trained on real labelled cells, and the
cross-check of two sources."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc

from mscflow.annotate import core as an
from mscflow.annotate import labels as lb
from mscflow.annotate import published as pb
from mscflow.annotate import reference as rf
from mscflow.errors import InputDataError
from mscflow.vocab import CELL_TYPE_ORDER, UNASSIGNED

ROOT = Path(__file__).resolve().parents[2]
NAMES = ROOT / "resources" / "annotation" / "published_cell_types.tsv"
CELLXGENE = ROOT / "tests" / "data" / "public" / "tm_lung_cellxgene.h5ad"


# ---------------------------------------------------------------- published labels
def test_shipped_name_table_maps_cellxgene_names_onto_the_vocabulary():
    names = pb.read_name_table(NAMES)
    assert set(names.values()) <= set(CELL_TYPE_ORDER)
    labels = pd.Series(["alveolar macrophage", "Kupffer cell", "classical monocyte",
                        "CD14-positive monocyte", "natural killer cell", " B  cell ",
                        "KUPFFER CELL", "pericyte", None], name="published_cell_type")
    mapped = pb.map_published_labels(labels, names)
    assert mapped.tolist() == ["alveolar_macrophage", "kupffer_cell", "classical_monocyte",
                               "classical_monocyte", "nk_cell", "b_cell", "kupffer_cell",
                               "pericyte", UNASSIGNED]
    # every label of the CELLxGENE fixture has a row
    fixture = ad.read_h5ad(CELLXGENE, backed="r").obs["cell_type"].astype(str)
    assert set(pb.map_published_labels(fixture, names)) <= set(CELL_TYPE_ORDER)


def test_name_table_errors_name_the_file_and_line(tmp_path: Path):
    with pytest.raises(InputDataError, match="no file"):
        pb.read_name_table(tmp_path / "none.tsv")
    bad = tmp_path / "names.tsv"
    bad.write_text("name\tcell_type\nB cell\tb_cell\n")
    with pytest.raises(InputDataError, match="no column published_name"):
        pb.read_name_table(bad)
    bad.write_text("published_name\tcell_type\nB cell\tb_cell\nb cell\tplasma_cell\n")
    with pytest.raises(InputDataError, match="line 3: 'b cell' is mapped to both b_cell"):
        pb.read_name_table(bad)


def test_published_column_must_be_carried():
    obs = pd.DataFrame({"published_cell_type": ["B cell"]})
    with pytest.raises(InputDataError, match="published_column is not set"):
        pb.published_labels(obs, None, {})
    with pytest.raises(InputDataError, match="add 'author_label' to the keep_obs"):
        pb.published_labels(obs, "author_label", {})
    assert pb.published_labels(obs, "cell_type", {"b cell": "b_cell"}).tolist() == ["b_cell"]


# ---------------------------------------------------------------- real labelled cells
@pytest.fixture(scope="module")
def halves():
    """The CELLxGENE fixture (real Tabula Muris counts, the authors' labels) split by donor:
    D1+D2 to train on, D3+D4 held apart (log-normalised, clustered)."""
    fixture = ad.read_h5ad(CELLXGENE)
    train = fixture[fixture.obs["donor_id"].isin(["D1", "D2"])].copy()
    test = fixture[fixture.obs["donor_id"].isin(["D3", "D4"])].copy()
    query = rf.reference_expression(test, "the held-apart half")
    sc.pp.highly_variable_genes(query, n_top_genes=2000)
    sc.pp.pca(query, n_comps=30, random_state=0, mask_var="highly_variable")
    sc.pp.neighbors(query, random_state=0)
    sc.tl.leiden(query, resolution=1.0, random_state=0, flavor="igraph", n_iterations=2,
                 directed=False)
    return train, query


@pytest.mark.slow
def test_model_trained_on_half_a_real_fixture_annotates_the_other_half(halves, tmp_path):
    train, query = halves
    model = rf.train_reference_model(train, "cell_type", seed=0)
    path = tmp_path / "model.pkl"
    model.write(str(path))
    loaded = rf.load_model(path)
    predictions = rf.predict_reference(query, loaded, query.obs["leiden"])
    truth = query.obs["cell_type"].astype(str)
    per_cell = (predictions["cell_type_reference_cell"] == truth).mean()
    voted = (predictions["cell_type_reference"] == truth).mean()
    assert per_cell >= 0.9 and voted >= 0.9, (per_cell, voted)
    # majority voting: one label per cluster
    assert (predictions.groupby(query.obs["leiden"].to_numpy())["cell_type_reference"]
            .nunique() == 1).all()
    p = predictions["cell_type_reference_probability"]
    assert p.between(0, 1).all() and p.median() > 0.5
    # the seed decides: the same model again
    again = rf.train_reference_model(train, "cell_type", seed=0)
    np.testing.assert_array_equal(again.classifier.coef_, model.classifier.coef_)


def test_reference_errors_name_what_is_wrong(tmp_path: Path):
    fixture = ad.read_h5ad(CELLXGENE)[:60].copy()
    with pytest.raises(InputDataError, match="no obs column 'label'"):
        rf.train_reference_model(fixture, "label", seed=0, what="ref.h5ad")
    fixture.obs["one"] = "x"
    with pytest.raises(InputDataError, match="ref.h5ad: 'one' holds 1 label"):
        rf.train_reference_model(fixture, "one", seed=0, what="ref.h5ad")
    scaled = ad.AnnData(np.full((5, 3), 0.5, dtype=np.float32))
    with pytest.raises(InputDataError, match="neither counts nor log-normalised"):
        rf.reference_expression(scaled, "scaled.h5ad")
    (tmp_path / "junk.pkl").write_bytes(b"not a model")
    with pytest.raises(InputDataError, match="is not a celltypist model"):
        rf.load_model(tmp_path / "junk.pkl")
    with pytest.raises(InputDataError, match="no file"):
        rf.load_model(tmp_path / "none.pkl")


# ---------------------------------------------------------------- cross-check
def _two_sources() -> pd.DataFrame:
    return pd.DataFrame({
        "leiden_1": ["0"] * 4 + ["1"] * 3 + ["2"] * 3,
        "tissue": "lung",
        "cell_type_markers": ["t_cell"] * 4 + ["momf"] * 3 + [UNASSIGNED] * 3,
        "cell_type_published": ["t_cell", "t_cell", "t_cell", "nk_cell"] + ["b_cell"] * 3
        + ["b_cell", "b_cell", "plasma_cell"],
    })


def test_agreement_per_label_and_disagreeing_clusters():
    obs = _two_sources()
    per_label = lb.agreement_per_label(obs, "published").set_index("label")
    assert per_label.loc["(all cells)", "agreement"] == 0.3
    assert per_label.loc["t_cell"].tolist() == [4, 3, 3, 0.75]
    assert per_label.loc["b_cell", "n_cells_other"] == 5
    assert per_label.loc["momf", "agreement"] == 0.0
    clusters = lb.cluster_agreement(obs, "published", "leiden_1")
    assert clusters["agrees"].tolist() == [False, False, True]
    assert clusters[["cluster", "markers_label", "other_label"]].values.tolist()[:2] == [
        ["1", "momf", "b_cell"], ["2", UNASSIGNED, "b_cell"]]
    assert clusters.loc[2, "share_agreeing"] == 0.75


def test_crosscheck_logs_disagreeing_clusters_and_draws(caplog):
    with caplog.at_level("INFO", logger="mscflow.annotate.labels"):
        per_label, clusters, figure = lb.crosscheck_sources(_two_sources(), "published",
                                                            "leiden_1")
    assert "markers vs published: 30.0% of cells labelled alike" in caplog.text
    assert "cluster 1 in lung (3 cells): markers say momf, published says b_cell" in caplog.text
    assert figure.axes[0].get_xlabel() == "marker label"
    with pytest.raises(InputDataError, match="cell_type_reference"):
        lb.crosscheck_sources(_two_sources(), "reference", "leiden_1")
    assert lb.available_sources("markers", None) == []
    assert lb.available_sources("reference", "cell_type") == ["published", "reference"]


def test_annotate_stage_takes_cell_type_from_the_source():
    adata = ad.AnnData(obs=pd.DataFrame({"leiden_1": ["0"] * 20 + ["1"] * 20,
                                         "tissue": "lung"},
                                        index=[f"c{i}" for i in range(40)]))
    rng = np.random.default_rng(0)
    genes = ["A1", "A2", "A3", "B1", "B2", "B3"] + [f"bg{i}" for i in range(20)]
    x = rng.poisson(0.3, size=(40, len(genes))).astype(float)
    x[:20, :3] += 5
    x[20:, 3:6] += 5
    adata = ad.AnnData(np.log1p(x), obs=adata.obs, var=pd.DataFrame(index=genes))
    markers = {"t_cell": ["A1", "A2", "A3"], "b_cell": ["B1", "B2", "B3"]}
    scores = pd.DataFrame({"t_cell": np.r_[np.ones(20), np.zeros(20)],
                           "b_cell": np.r_[np.zeros(20), np.ones(20)]}, index=adata.obs_names)
    published = pd.Series(["T cell"] * 20 + ["plasma_cell"] * 20, index=adata.obs_names)
    settings = an.AnnotationSettings.from_config({"source": "published",
                                                  "published_column": "cell_type"})
    per_cell, _, _ = an.annotate_stage(adata, markers, scores, scores[[]], settings,
                                       cluster_key="leiden_1", published=published)
    assert adata.obs["cell_type"].astype(str).tolist() == published.tolist()
    assert adata.obs["cell_type_markers"].astype(str).tolist() == ["t_cell"] * 20 + [
        "b_cell"] * 20
    assert per_cell["cell_type"].tolist() == published.tolist()
    with pytest.raises(InputDataError, match="no reference labels"):
        an.annotate_stage(adata, markers, scores, scores[[]],
                          an.AnnotationSettings.from_config({"source": "reference"}),
                          cluster_key="leiden_1")
