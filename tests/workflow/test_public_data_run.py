"""Public data as it is published, through the workflow (issue 15), on the real Tabula Muris
lung channel (tests/data/public, built by tests/data/make_public_fixtures.py).

* The CELLxGENE-shaped file (4 pseudo-donors in one h5ad, Ensembl ids, counts in .raw,
  the authors' cell_type), sheet written by ``mscflow samplesheet``, gives the same QC,
  clusters and labels as the same cells read from per-donor Cell Ranger folders; the authors'
  labels come out as a table and a heat map.
* A 5,000-gene panel lacking curated genes runs end to end with the default settings; the
  dropped sets are listed in the gene-set report, in the report, and the annotation names
  the labels it left out.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.io
import scipy.sparse as sp
import yaml
from helpers import REPO, TABULA_MURIS, make_workdir, page_problems, run_snakemake

from mscflow.annotate.published import map_published_labels, read_name_table
from mscflow.cli import main as mscflow_main
from mscflow.inputs.sample_counts import counts_matrix
from mscflow.vocab import CELL_TYPE_ORDER

PUBLIC = REPO / "tests" / "data" / "public"
CELLXGENE = PUBLIC / "tm_lung_cellxgene.h5ad"
SHEET_OPTIONS = ["--sample-key", "donor_id", "--condition-key", "condition", "--tissue-key",
                 "tissue", "--layer", "raw", "--var-symbols", "feature_name", "--keep-obs",
                 "cell_type"]
ANNOTATED = "results/annotate/annotated.h5ad"
LABELS = ["results/labels/published_cell_type_vs_cell_type.tsv",
          "results/plots/labels_published_cell_type_vs_cell_type.png"]


def crosscheck_files(source: str) -> list[str]:
    """The cross-check files of the marker labels against ``source``."""
    return [f"results/labels/markers_vs_{source}_agreement.tsv",
            f"results/labels/markers_vs_{source}_clusters.tsv",
            f"results/plots/labels_markers_vs_{source}.png"]


pytestmark = pytest.mark.workflow


def _write_10x(folder: Path, counts: sp.csr_matrix, barcodes, ids, symbols) -> None:
    """A Cell Ranger v3 folder (gzipped) of cells x genes ``counts``."""
    folder.mkdir(parents=True)
    with gzip.open(folder / "matrix.mtx.gz", "wb") as handle:
        scipy.io.mmwrite(handle, sp.csr_matrix(counts.T).astype(np.int64), field="integer")
    with gzip.open(folder / "features.tsv.gz", "wt") as handle:
        handle.writelines(f"{i}\t{s}\tGene Expression\n" for i, s in zip(ids, symbols,
                                                                          strict=True))
    with gzip.open(folder / "barcodes.tsv.gz", "wt") as handle:
        handle.writelines(f"{b}\n" for b in barcodes)


def _tenx_workdir(path: Path, sheet: pd.DataFrame) -> Path:
    """The same donors as per-donor 10x folders cut from the original channel (the
    fixture's genes, in its order)."""
    workdir = make_workdir(path, with_contrasts=False)
    fixture = ad.read_h5ad(CELLXGENE, backed="r")
    channel = sc.read_10x_mtx(TABULA_MURIS, var_names="gene_symbols", cache=False)
    symbols = fixture.var["feature_name"].astype(str).tolist()
    rows = []
    for donor in sheet["sample"]:
        cells = fixture.obs_names[fixture.obs["donor_id"] == donor]
        _write_10x(workdir / "data" / donor, channel[cells, symbols].X, cells,
                   fixture.var_names, symbols)
        rows.append({**sheet.set_index("sample").loc[donor].to_dict(), "sample": donor,
                     "path": f"data/{donor}", "format": "10x_mtx", "layer": "",
                     "obs_filter": "", "var_symbols": "", "keep_obs": ""})
    pd.DataFrame(rows)[list(sheet.columns)].to_csv(workdir / "config/samples.tsv", sep="\t",
                                                    index=False)
    return workdir


def _cellxgene_workdir(path: Path, source: Path, config: dict | None = None,
                       with_contrasts: bool = False) -> Path:
    workdir = make_workdir(path, config, with_contrasts=with_contrasts)
    assert mscflow_main(["samplesheet", str(source), *SHEET_OPTIONS, "-o",
                         str(workdir / "config/samples.tsv")]) == 0
    return workdir


def test_cellxgene_file_gives_the_qc_clusters_and_labels_of_the_10x_folders(
        tmp_path: Path) -> None:
    """... and the 10x run, annotated by a celltypist model it trains from the labelled
    CELLxGENE file (annotation.source: reference), carries those labels; both runs
    cross-check them with the marker labels."""
    cxg = _cellxgene_workdir(tmp_path / "cxg", CELLXGENE,
                             {"annotation": {"published_column": "cell_type"}})
    sheet = pd.read_csv(cxg / "config/samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    tenx = _tenx_workdir(tmp_path / "tenx", sheet)
    reference = {"source": "reference", "reference_h5ad": str(CELLXGENE),
                 "reference_label_column": "cell_type"}
    config = yaml.safe_load((tenx / "config/config.yaml").read_text())
    config.setdefault("annotation", {}).update(reference)
    (tenx / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    run_snakemake(cxg, "--cores", "2", ANNOTATED, *LABELS, *crosscheck_files("published"))
    run_snakemake(tenx, "--cores", "2", ANNOTATED, *crosscheck_files("reference"))
    for donor in sheet["sample"]:  # QC of every cell: identical
        metrics = [pd.read_csv(w / f"results/qc/{donor}_metrics.tsv.gz", sep="\t")
                   for w in (cxg, tenx)]
        pd.testing.assert_frame_equal(*metrics)
    a, b = (ad.read_h5ad(w / ANNOTATED) for w in (cxg, tenx))
    assert a.obs_names.equals(b.obs_names) and a.var_names.equals(b.var_names)
    counts = [counts_matrix(sorted(w.glob("results/qc/*.h5ad")), a.obs_names, a.var_names)
              for w in (cxg, tenx)]
    assert (counts[0] != counts[1]).nnz == 0
    for column in ("leiden_1", "cell_type_markers", "cell_type_cell"):
        assert a.obs[column].astype(str).equals(b.obs[column].astype(str)), column
    assert a.obs["cell_type"].astype(str).equals(a.obs["cell_type_markers"].astype(str))
    # the reference run: cell_type is the model's cluster vote, kept with each cell's own
    # prediction and probability; the model learnt the authors' labels of these cells
    assert b.obs["cell_type"].astype(str).equals(b.obs["cell_type_reference"].astype(str))
    authors = ad.read_h5ad(CELLXGENE, backed="r").obs["cell_type"].astype(str)
    names = read_name_table(REPO / "resources/annotation/published_cell_types.tsv")
    authors = map_published_labels(authors.loc[b.obs_names.str.split(":").str[1]], names)
    own = b.obs["cell_type_reference_cell"].astype(str).to_numpy()
    assert (own == authors.to_numpy()).mean() >= 0.9
    assert set(b.obs["cell_type"]) <= set(CELL_TYPE_ORDER)  # the model's names, mapped
    assert b.obs["cell_type_reference_probability"].between(0, 1).all()
    assert (b.obs.groupby("leiden_1", observed=True)["cell_type"].nunique() == 1).all()
    assert re.search(r"reference model: \d+ of its \d+ genes in the data",
                     (tenx / "logs/annotate/annotate_reference.log").read_text())
    for workdir, other in ((cxg, "published"), (tenx, "reference")):
        agreement = pd.read_csv(workdir / crosscheck_files(other)[0], sep="\t")
        assert agreement.loc[0, "label"] == "(all cells)"
        assert agreement.loc[0, "agreement"] > 0.6, agreement
        clusters = pd.read_csv(workdir / crosscheck_files(other)[1], sep="\t")
        assert clusters["n_cells"].sum() == a.n_obs
        assert (workdir / crosscheck_files(other)[2]).read_bytes()[:4] == b"\x89PNG"
    # the authors' labels came along, and are compared with mscflow's
    assert "published_cell_type" in a.obs and "published_cell_type" not in b.obs
    fixture = ad.read_h5ad(CELLXGENE, backed="r").obs
    barcodes = a.obs_names.str.split(":").str[1]
    assert (a.obs["published_cell_type"].astype(str).to_numpy()
            == fixture.loc[barcodes, "cell_type"].astype(str).to_numpy()).all()
    table = pd.read_csv(cxg / LABELS[0], sep="\t")
    assert table["n_cells"].sum() == a.n_obs
    am = table[table["published_label"] == "alveolar macrophage"].iloc[0]
    assert am["cell_type"] == "alveolar_macrophage" and am["row_fraction"] > 0.8
    assert (cxg / LABELS[1]).read_bytes()[:4] == b"\x89PNG"


def _panel_file(path: Path, n_genes: int = 5000) -> Path:
    """The CELLxGENE fixture cut to its n_genes most often detected genes: a restricted
    panel lacking curated genes (the lymphocyte markers among them)."""
    adata = ad.read_h5ad(CELLXGENE)
    detected = np.asarray((adata.raw.X > 0).sum(axis=0)).ravel()
    keep = np.sort(np.argsort(-detected, kind="stable")[:n_genes])
    raw = adata.raw.to_adata()[:, keep].copy()
    panel = adata[:, keep].copy()
    panel.raw = raw
    panel.write_h5ad(path)
    return path


def _report_table(html: str, name: str) -> pd.DataFrame:
    results = json.loads(re.search(r"var results = (\{.*?\});\s*</script>", html,
                                   flags=re.S).group(1))
    entry = next(v for k, v in results.items() if k.endswith(name))
    text = base64.b64decode(entry["data_uri"].split("base64,", 1)[1]).decode()
    return pd.read_csv(pd.io.common.StringIO(text), sep="\t")


# Sheet text that would run as script if any page let it through as markup; its strings
# must come out as text (a browser test reads window.__pwned).
HOSTILE = ("<script>window.__pwned=1</script> \"MSC\" & 'q' <img src=x "
           "onerror=\"window.__pwned=2\"> \u202eRTL \u00e9")


@pytest.fixture(scope="module")
def panel_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The restricted panel end to end with its report, from a hostile sheet: the treated
    condition, every replicate and a free column hold markup, quotes, an ampersand and
    bidirectional marks."""
    root = tmp_path_factory.mktemp("panel")
    panel = _panel_file(root / "panel_5000.h5ad")
    contrast = {"name": "lung_pseudo", "tissue": "lung", "condition": HOSTILE,
                "reference": "control"}
    published = {"source": "published", "published_column": "cell_type"}
    workdir = _cellxgene_workdir(root / "panel", panel,
                                 {"contrasts": [contrast], "annotation": published},
                                 with_contrasts=True)
    sheet_path = workdir / "config/samples.tsv"
    sheet = pd.read_csv(sheet_path, sep="\t", dtype=str, keep_default_na=False)
    sheet["condition"] = sheet["condition"].replace({"pseudo_treated": HOSTILE})
    sheet["replicate"] = [f"<b>{r}</b> &amp; \u202e" for r in sheet["replicate"]]
    sheet["note"] = "</script><script>window.__pwned=3</script>"
    sheet.to_csv(sheet_path, sep="\t", index=False)  # quotes fields holding '"', as Excel does
    run_snakemake(workdir, "--cores", "2")
    run_snakemake(workdir, "--report", "report.html", "--report-stylesheet",
                  str(REPO / "workflow/report/report.css"))
    return workdir


def test_restricted_panel_runs_end_to_end_and_lists_dropped_sets(panel_run: Path) -> None:
    workdir = panel_run
    report = pd.read_csv(workdir / "results/genesets/gene_set_report.tsv", sep="\t",
                         keep_default_na=False)
    dropped = report[report["status"] == "dropped"]
    assert {"t_cell", "b_cell"} <= set(dropped.loc[dropped["kind"] == "marker", "set"])
    assert (dropped.loc[dropped["kind"] == "programme", "set"].size >= 1)
    assert dropped["reason"].str.contains("fewer than genesets.min_genes=3").all()
    programmes = set(dropped.loc[dropped["kind"] == "programme", "set"])
    scored = set(pd.read_parquet(workdir / "results/scores/scores.parquet").columns)
    assert scored and not scored & programmes
    gsea = pd.read_csv(workdir / "results/contrasts/gsea.tsv", sep="\t")
    assert not set(gsea["gene_set"]) & programmes
    log = (workdir / "logs/annotate/annotate.log").read_text()
    assert "candidate label(s) left out" in log and "t_cell (" in log and "b_cell (" in log
    clusters = pd.read_csv(workdir / "results/annotate/clusters.tsv", sep="\t",
                           keep_default_na=False)
    assert not set(clusters["label"]) & {"t_cell", "b_cell"}
    # the "none of these" floor on a real restricted panel: the authors' B and T cells,
    # whose marker sets the panel dropped, are not given another population's marker label
    obs = ad.read_h5ad(workdir / ANNOTATED, backed="r").obs
    for authors in ("B cell", "T cell"):
        markers = obs.loc[obs["published_cell_type"] == authors, "cell_type_markers"]
        assert (markers.astype(str) == "unassigned").mean() >= 0.9, markers.value_counts()
    assert "unassigned" in log and "markers expressed" in log
    unassigned = clusters[clusters["label"] == "unassigned"]
    assert unassigned["reason"].str.len().gt(0).all()
    # annotation.source: published: the authors' labels, in mscflow's names, are cell_type
    # through the contrasts and on the findings page
    expected = obs["published_cell_type"].astype(str).map(
        {"B cell": "b_cell", "T cell": "t_cell", "dendritic cell": "dendritic_cell",
         "alveolar macrophage": "alveolar_macrophage", "natural killer cell": "nk_cell",
         "classical monocyte": "classical_monocyte", "endothelial cell": "endothelial",
         "non-classical monocyte": "nonclassical_monocyte", "neutrophil": "neutrophil",
         "fibroblast": "stellate_fibroblast", "type II pneumocyte": "at2"})
    assert obs["cell_type"].astype(str).equals(expected)
    shifts = pd.read_parquet(workdir / "results/contrasts/score_shifts.parquet")
    assert {"b_cell", "t_cell", "dendritic_cell"} <= set(shifts["cell_type"].astype(str))
    findings = (workdir / "results/findings.html").read_text()
    assert "data-annotation-source='published'" in findings
    assert "the authors' labels (obs column <code>cell_type</code>" in findings
    agreement = pd.read_csv(workdir / crosscheck_files("published")[0], sep="\t")
    by_label = agreement.set_index("label")
    assert by_label.loc["b_cell", "n_cells_markers"] == 0 and by_label.loc[
        "alveolar_macrophage", "agreement"] > 0.8
    checked = pd.read_csv(workdir / crosscheck_files("published")[1], sep="\t")
    assert not checked["agrees"].all()
    html = (workdir / "report.html").read_text()
    shown = _report_table(html, "gene_set_report.tsv")
    assert set(shown.loc[shown["status"] == "dropped", "set"]) == set(dropped["set"])
    assert "labels_published_cell_type_vs_cell_type.png" in html
    assert "labels_markers_vs_published.png" in html and "markers_vs_published_clusters.tsv" in html


def _report_data(html: str) -> dict:
    return json.loads(re.search(r'<script id="results">\s*var results = (\{.*?\});\s*</script>',
                                html, flags=re.S).group(1))


def test_hostile_sheet_shows_as_text_and_runs_no_script(panel_run: Path, browser) -> None:
    """report.html, findings.html and the explorer from the hostile sheet: no script of the
    sheet runs, the report's data block parses whole, the strings show as text."""
    from selenium.webdriver.support.ui import Select, WebDriverWait

    html = (panel_run / "report.html").read_text()
    for fragment in ("<script>window", "<img src=x", 'onerror="', "\u202e"):
        assert fragment not in html, f"{fragment!r} reached report.html raw"
    items = _report_data(html)  # the data block parses whole
    assert len(items) >= 40
    overview = next(v for k, v in items.items() if k.endswith("config_used.tsv"))
    assert "\\u003cscript\\u003e" in overview["job_properties"]["params"]  # escaped text
    pages = {"report.html": panel_run / "report.html",
             "findings.html": panel_run / "results/findings.html",
             "explorer.html": panel_run / "results/report/explorer.html"}
    for name, page in pages.items():
        browser.get("about:blank")
        page_problems(browser)
        browser.get(page.resolve().as_uri())
        if name == "report.html":
            WebDriverWait(browser, 60).until(lambda d: d.execute_script(
                "return typeof results === 'object' && document.readyState === 'complete'"))
            assert browser.execute_script("return Object.keys(results).length") == len(items)
        elif name == "explorer.html":
            WebDriverWait(browser, 120).until(lambda d: d.execute_script(
                "return window.explorer && window.explorer.renders >= 1"))
            Select(browser.find_element("id", "colour")).select_by_value("condition")
            WebDriverWait(browser, 60).until(lambda d: d.execute_script(
                "return window.explorer.renderedField === 'condition'"))
            names = browser.execute_script(
                "return document.getElementById('plot').data.map(t => t.name)")
            assert any(HOSTILE in n for n in names), names
        else:
            text = browser.find_element("tag name", "body").text
            assert "<script>window.__pwned=1</script>" in text, text[:2000]
        assert browser.execute_script("return window.__pwned === undefined"), name
        problems = [p for p in page_problems(browser) if "favicon" not in p]
        assert not problems, f"{name}: " + "\n".join(problems)
