"""Public data as it is published (issue 15): the fixtures of tests/data/public/ (built from
the real Tabula Muris lung channel by tests/data/make_public_fixtures.py) read through
mscflow's readers give the channel's counts; round-off, symbols, block reading, the authors'
labels and the sample-sheet checks on h5ad files."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from helpers import REPO, TABULA_MURIS

from mscflow.errors import InputDataError
from mscflow.inputs import matrixfiles
from mscflow.inputs.readers import read_sample

PUBLIC = REPO / "tests" / "data" / "public"
CELLXGENE = PUBLIC / "tm_lung_cellxgene.h5ad"
HVG = PUBLIC / "tm_lung_hvg2000.h5ad"
ROUNDOFF = PUBLIC / "tm_lung_float_roundoff.h5ad"
LOOM = PUBLIC / "tm_lung_velocyto.loom"
DONORS = ["D1", "D2", "D3", "D4"]
CXG = {"layer": "raw", "var_symbols": "feature_name"}


@pytest.fixture(scope="module")
def channel() -> ad.AnnData:
    """The original 10x channel, read by scanpy alone (not by the code under test)."""
    return sc.read_10x_mtx(TABULA_MURIS, var_names="gene_symbols", cache=False)


def assert_same_counts(adata: ad.AnnData, channel: ad.AnnData, cells=None) -> None:
    """``adata`` holds exactly the channel's counts for its cells and genes."""
    ref = channel[list(cells if cells is not None else adata.obs_names), list(adata.var_names)]
    assert adata.X.dtype == np.float32 and sp.isspmatrix_csr(adata.X)
    assert (abs(ref.X - adata.X)).sum() == 0
    assert adata.X.nnz == ref.X.nnz


# ---------------------------------------------------------------- the fixtures
def test_cellxgene_file_split_by_donor_gives_the_channel(channel: ad.AnnData) -> None:
    """Each pseudo-donor read with obs_filter + .raw + feature_name: the channel's counts;
    together the donors are every cell once; keep_obs carries the authors' label."""
    parts = [read_sample(CELLXGENE, "h5ad", sample=d, obs_filter=f"donor_id={d}",
                         keep_obs="cell_type,donor_id", **CXG) for d in DONORS]
    for donor, part in zip(DONORS, parts, strict=True):
        assert_same_counts(part, channel)
        assert (part.obs["published_donor_id"] == donor).all()
        assert part.obs["published_cell_type"].dtype == "category"
    names = np.concatenate([p.obs_names for p in parts])
    assert len(names) == channel.n_obs == len(set(names))
    with h5py.File(CELLXGENE) as handle:  # the layout: ids as var_names, log data in X
        assert ad.io.read_elem(handle["var/_index"])[0].startswith("ENSMUSG")
        assert handle["X/data"][:].max() < 10 and handle["raw/X/data"][:].max() > 1000


def test_restricted_and_float_and_loom_layouts_give_the_channel(
        channel: ad.AnnData, caplog: pytest.LogCaptureFixture) -> None:
    hvg = read_sample(HVG, "h5ad", sample="hvg", layer="counts")
    assert hvg.n_vars == 2000
    assert_same_counts(hvg, channel)
    with caplog.at_level(logging.INFO, logger="mscflow.inputs.matrixfiles"):
        roundoff = read_sample(ROUNDOFF, "h5ad", sample="float_1")
    assert_same_counts(roundoff, channel)
    said = [r.message for r in caplog.records if "round-off" in r.message]
    assert len(said) == 1 and "float_1" in said[0] and "< 1e-06" in said[0]
    loom = read_sample(LOOM, "loom", sample="loom_1")
    barcodes = [n.removeprefix("P7_8:").removesuffix("x") + "-1" for n in loom.obs_names]
    assert_same_counts(loom, channel, barcodes)
    # anndata's own loom reader sees the same main matrix (spliced layers left unread)
    reference = ad.io.read_loom(LOOM, X_name="", obs_names="CellID", var_names="Gene")
    assert (abs(reference.X - loom.X)).sum() == 0


def test_normalised_x_names_the_layer_to_use() -> None:
    with pytest.raises(InputDataError) as err:
        read_sample(CELLXGENE, "h5ad", sample="D1", obs_filter="donor_id=D1",
                    var_symbols="feature_name")
    text = str(err.value)
    assert "sample 'D1'" in text and str(CELLXGENE) in text and "(X) holds non-integer" in text
    assert "`layer: raw` (.raw.X)" in text
    with pytest.raises(InputDataError, match=r"this file offers `layer: counts`\."):
        read_sample(HVG, "h5ad", sample="h", layer="")


def _h5ad(tmp_path: Path, x, *, name="s.h5ad", raw=None, layers=None, var=None) -> Path:
    x = sp.csr_matrix(np.asarray(x, dtype=np.float64))
    var = var if var is not None else pd.DataFrame(index=[f"Gene{i}" for i in
                                                          range(x.shape[1])])
    adata = ad.AnnData(x, obs=pd.DataFrame(index=[f"c{i}" for i in range(x.shape[0])]), var=var)
    for key, value in (layers or {}).items():
        adata.layers[key] = sp.csr_matrix(np.asarray(value, dtype=np.float64))
    if raw is not None:
        adata.raw = ad.AnnData(sp.csr_matrix(np.asarray(raw, dtype=np.float64)),
                               obs=adata.obs, var=adata.var)
    adata.write_h5ad(tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("off, accepted", [(1e-9, True), (9e-7, True), (1e-6, False),
                                           (0.5, False)])
def test_counts_roundoff_both_ways(tmp_path: Path, off: float, accepted: bool) -> None:
    """|x - round(x)| < 1e-6 is round-off (rounded); anything larger is not counts."""
    counts = np.array([[3.0, 0.0, 1.0], [0.0, 7.0, 2.0]])
    path = _h5ad(tmp_path, counts + np.array([[off, 0, -off], [0, off, 0]]),
                 layers={"counts": counts})
    if accepted:
        adata = read_sample(path, "h5ad", sample="s1")
        assert np.array_equal(adata.X.toarray(), counts)
    else:
        with pytest.raises(InputDataError, match=r"holds non-integer values .*`layer: counts`"):
            read_sample(path, "h5ad", sample="s1")


def test_var_symbols_repeats_suffixed_and_missing_kept(tmp_path: Path, caplog) -> None:
    var = pd.DataFrame({"feature_name": ["Actb", "Actb", None, "Cd68"]},
                       index=["ENSMUSG0000001", "ENSMUSG0000002", "ENSMUSG0000003",
                              "ENSMUSG0000004"])
    path = _h5ad(tmp_path, [[1, 2, 3, 4]], var=var)
    with caplog.at_level(logging.INFO, logger="mscflow.inputs.readers"):
        adata = read_sample(path, "h5ad", sample="s", var_symbols="feature_name")
    assert list(adata.var_names) == ["Actb", "Actb-1", "ENSMUSG0000003", "Cd68"]
    assert "suffixed -1, -2... as scanpy's var_names_make_unique does" in caplog.text
    assert "1 of 4 genes have no symbol" in caplog.text
    with pytest.raises(InputDataError, match=r"are Ensembl ids .*Set `var_symbols`.*"
                                             r"likely 'feature_name'"):
        read_sample(path, "h5ad", sample="s")


# ---------------------------------------------------------------- block reading
@pytest.mark.parametrize("dense", [False, True])
def test_rows_read_in_blocks_equal_a_plain_slice(tmp_path: Path, monkeypatch, dense) -> None:
    """Small blocks and gaps force many block reads: the result is the plain row slice."""
    rng = np.random.default_rng(1)
    counts = sp.random(300, 40, density=0.2, random_state=1, format="csr",
                       data_rvs=lambda n: rng.integers(1, 9, n)).astype(np.float32)
    adata = ad.AnnData(counts.toarray() if dense else counts)
    adata.write_h5ad(tmp_path / "m.h5ad")
    monkeypatch.setattr(matrixfiles, "BLOCK_VALUES", 97)
    monkeypatch.setattr(matrixfiles, "MAX_GAP_ROWS", 3)
    rounding = matrixfiles.CountRounding(sample="s", source="m", hint="")
    with matrixfiles.open_matrix_file(tmp_path / "m.h5ad", "h5ad") as source:
        for rows in (np.arange(300), np.sort(rng.choice(300, 77, replace=False)),
                     np.array([5]), np.array([0, 299])):
            got = source.read_rows("", rows, rounding)
            assert (abs(got - counts[rows])).sum() == 0 and got.shape == (len(rows), 40)


def test_csc_and_legacy_layouts_read(tmp_path: Path) -> None:
    counts = sp.random(30, 8, density=0.3, random_state=2, format="csc") * 10
    counts.data = np.round(counts.data) + 1
    ad.AnnData(counts.astype(np.float32)).write_h5ad(tmp_path / "csc.h5ad")
    adata = read_sample(tmp_path / "csc.h5ad", "h5ad", sample="c", obs_filter="")
    assert (abs(adata.X - counts)).sum() == 0
    with h5py.File(tmp_path / "legacy.h5ad", "w") as handle:  # anndata < 0.7 (2018-19)
        handle["X"] = np.array([[1, 0, 2], [0, 3, 0], [4, 0, 0]], dtype=np.float32)
        handle["obs"] = np.array([(b"c0", b"A"), (b"c1", b"B"), (b"c2", b"A")],
                                 dtype=[("index", "S2"), ("donor", "S1")])
        handle["var"] = np.array([(b"Actb",), (b"Cd68",), (b"Marco",)], dtype=[("index", "S5")])
    legacy = read_sample(tmp_path / "legacy.h5ad", "h5ad", sample="a", obs_filter="donor=A",
                         keep_obs="donor")
    assert legacy.obs_names.tolist() == ["c0", "c2"]
    assert legacy.X.toarray().tolist() == [[1, 0, 2], [4, 0, 0]]
    assert legacy.obs["published_donor"].astype(str).tolist() == ["A", "A"]


# ---------------------------------------------------------------- authors' labels
def test_label_columns_and_crosstab() -> None:
    from mscflow.annotate.labels import author_label_columns, compare_labels, is_label_column

    assert author_label_columns(["cell_type,donor_id", "cell_type;free_annotation",
                                 "", "cell_type_ontology_term_id"]) == [
        "published_cell_type", "published_free_annotation"]
    assert not is_label_column("donor_id") and is_label_column("author_cell_type")
    obs = pd.DataFrame({
        "published_cell_type": pd.Categorical(["AM", "AM", "AM", "B", None]),
        "cell_type": ["alveolar_macrophage", "alveolar_macrophage", "momf", "b_cell",
                      "b_cell"],
    })
    table, figure = compare_labels(obs, "published_cell_type")
    assert table.values.tolist() == [
        ["AM", "alveolar_macrophage", 2, 0.6667], ["AM", "momf", 1, 0.3333],
        ["(no label)", "b_cell", 1, 1.0], ["B", "b_cell", 1, 1.0]]
    assert figure.axes[0].get_title().startswith("Published 'cell_type'")
    from mscflow.errors import InputDataError

    with pytest.raises(InputDataError, match="keep_obs must name 'free_annotation'"):
        compare_labels(obs, "published_free_annotation")


# ---------------------------------------------------------------- sample-sheet checks
def _sheet(tmp_path: Path, rows: list[dict]) -> pd.DataFrame:
    from mscflow.inputs.samplesheet import read_sample_sheet

    base = {"tissue": "lung", "condition": "control", "replicate": "1", "species": "mouse",
            "path": str(CELLXGENE), "format": "h5ad", "layer": "raw",
            "var_symbols": "feature_name"}
    table = pd.DataFrame([{**base, **r} for r in rows])
    table.to_csv(tmp_path / "samples.tsv", sep="\t", index=False)
    return read_sample_sheet(tmp_path / "samples.tsv")


def test_sheet_of_donors_passes_and_shared_path_needs_filters(tmp_path: Path) -> None:
    from mscflow.inputs.samplesheet import SampleSheetError, check_sample_files, check_samples

    sheet = _sheet(tmp_path, [{"sample": d, "obs_filter": f"donor_id={d}",
                               "keep_obs": "cell_type"} for d in DONORS])
    check_samples(sheet, sheet_path="s.tsv")
    check_sample_files(sheet, sheet_path="s.tsv")
    sheet = _sheet(tmp_path, [{"sample": "a", "obs_filter": "donor_id=D1"},
                              {"sample": "b", "obs_filter": ""}])
    with pytest.raises(SampleSheetError, match=r"sample 'b' reads every cell of .*sample\(s\) "
                                               r"\['a'\] read too"):
        check_samples(sheet, sheet_path="s.tsv")


def test_samples_without_a_kept_column_still_merge_with_it(tmp_path: Path) -> None:
    """Samples are merged on the obs columns they share: a sample whose file lacks a
    keep_obs column carries it empty, so the published labels survive the merge."""
    from mscflow.inputs.readers import add_published_columns
    from mscflow.inputs.samplesheet import reading_options

    sheet = _sheet(tmp_path, [{"sample": "D1", "obs_filter": "donor_id=D1",
                               "keep_obs": "cell_type"},
                              {"sample": "D2", "obs_filter": "donor_id=D2", "keep_obs": ""}])
    options = reading_options(sheet, "D2")
    assert options == {"layer": "raw", "obs_filter": "donor_id=D2",
                       "var_symbols": "feature_name", "keep_obs": "",
                       "run_keep_obs": "cell_type"}
    parts = []
    for sample in ("D1", "D2"):
        options = reading_options(sheet, sample)
        run_keep_obs = options.pop("run_keep_obs")
        part = read_sample(CELLXGENE, "h5ad", sample=sample, **options)
        add_published_columns(part, run_keep_obs)
        parts.append(part)
    merged = ad.concat(parts, join="inner", merge="same")
    column = merged.obs["published_cell_type"]
    assert column.dtype == "category" and column.notna().sum() == parts[0].n_obs


# ---------------------------------------------------------------- labels, in-process
def _genesets_settings():
    from mscflow.config import schema_defaults
    from mscflow.genesets import GeneSetSettings

    def absolute(value):
        if isinstance(value, dict):
            return {k: absolute(v) for k, v in value.items()}
        return str(REPO / value) if isinstance(value, str) else value

    path_keys = ("programmes", "markers", "synonyms", "orthologs")
    return GeneSetSettings.from_config({k: absolute(v) if k in path_keys else v for k, v in
                                        schema_defaults("genesets").items()})


def _labels(counts: ad.AnnData) -> tuple[pd.Series, dict[str, str]]:
    """The scoring and annotation steps of the workflow on fixed Leiden clusters of
    ``counts``: the cluster-level cell_type per cell, and the marker sets dropped."""
    from mscflow.annotate.core import AnnotationSettings, annotate_stage
    from mscflow.genesets import library_stage
    from mscflow.scoring.core import ScoringSettings, score_library

    adata = counts.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.pca(adata, n_comps=30, random_state=0)
    sc.pp.neighbors(adata, n_neighbors=15, random_state=0)
    sc.tl.leiden(adata, resolution=1.0, random_state=0, flavor="igraph", n_iterations=2,
                 directed=False, key_added="leiden")
    adata.obs["tissue"] = "lung"
    library = library_stage(adata.var_names, _genesets_settings(), species="mouse")
    scores, markers = score_library(adata, library, ScoringSettings.from_config({}),
                                    random_state=0)
    annotate_stage(adata, library.marker_sets(), markers, scores,
                   AnnotationSettings.from_config({}), cluster_key="leiden",
                   dropped_markers=library.dropped_sets("marker"))
    return adata.obs["cell_type"].astype(str), library.dropped_sets("programme")


@pytest.mark.slow
def test_restricted_panel_fixtures_give_the_labels_of_the_channel(channel: ad.AnnData) -> None:
    """The 2,000-gene layouts (h5ad layer, float round-off, loom) read as the channel's
    counts on those genes and so get the labels the channel gets on them; the panel drops
    programme sets (said) yet labels most cells as the full channel does."""
    hvg = read_sample(HVG, "h5ad", sample="hvg", layer="counts")
    reference, dropped = _labels(channel[hvg.obs_names, hvg.var_names].copy())
    assert dropped, "the 2,000-gene panel drops some programme sets"
    loom = read_sample(LOOM, "loom", sample="loom")
    loom.obs_names = [n.removeprefix("P7_8:").removesuffix("x") + "-1" for n in loom.obs_names]
    for layout in (hvg, read_sample(ROUNDOFF, "h5ad", sample="float"), loom):
        labels, _ = _labels(layout)
        assert labels.equals(reference.loc[labels.index])
    full, _ = _labels(channel.copy())
    agreement = (full.loc[reference.index] == reference).mean()
    print(f"2,000-gene panel vs full channel: {agreement:.1%} of cells get the same label")
    assert agreement >= 0.8


def test_qc_requests_follow_each_donors_share_of_a_shared_file(tmp_path: Path) -> None:
    """One donor of a many-donor h5ad asks for memory and time after its own cells, not the
    whole file's (the job reads only its rows): selected_share, and the dry run's requests."""
    import math
    import re

    from helpers import make_workdir, run_snakemake

    from mscflow.cli import main as mscflow_main
    from mscflow.inputs.readers import selected_share
    from mscflow.resources import SNAKEMAKE_JOBSTEP_MB

    donors = ad.read_h5ad(CELLXGENE, backed="r").obs["donor_id"].astype(str)
    expected = donors.value_counts(normalize=True)
    shares = {d: selected_share(CELLXGENE, "h5ad", f"donor_id={d}") for d in DONORS}
    assert shares == pytest.approx(expected.loc[DONORS].to_dict())
    assert sum(shares.values()) == pytest.approx(1.0)
    assert selected_share(CELLXGENE, "h5ad", "") == 1.0
    assert selected_share(TABULA_MURIS, "10x_mtx", "") == 1.0

    workdir = make_workdir(tmp_path, with_contrasts=False)
    assert mscflow_main(["samplesheet", str(CELLXGENE), "--sample-key", "donor_id",
                         "--condition-key", "condition", "--tissue-key", "tissue", "--layer",
                         "raw", "--var-symbols", "feature_name", "-o",
                         str(workdir / "config/samples.tsv")]) == 0
    dry = run_snakemake(workdir, "-n", "--cores", "2", *[f"results/qc/{d}.h5ad" for d in DONORS])
    asked = {m["sample"]: (int(m["runtime"]), int(m["mem"])) for m in re.finditer(
        r"wildcards: sample=(?P<sample>\w+)\n\s+resources: .*?runtime=(?P<runtime>\d+), "
        r"mem_mb=(?P<mem>\d+)", dry.stdout + dry.stderr)}
    assert sorted(asked) == DONORS
    rule = (REPO / "workflow/rules/qc.smk").read_text().split("rule qc_sample:")[1]
    base_mb, per_mb = map(float, re.search(r"scaled_mem_mb\((\d+), (\d+)", rule).groups())
    base_min, per_min = map(float, re.search(r"scaled_runtime\((\d+), ([\d.]+)", rule).groups())
    size_mb = CELLXGENE.stat().st_size / 1024**2
    for donor, (runtime, mem) in asked.items():
        share = shares[donor]
        assert mem == math.ceil(SNAKEMAKE_JOBSTEP_MB + base_mb + per_mb * size_mb * share)
        assert runtime == math.ceil(base_min + per_min * size_mb * share)
