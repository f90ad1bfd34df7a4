"""The Snakemake report: items, captions, tables, size, report.zip, and the page in Chromium.

The browser test opens report.html of the demo run in headless Chromium through Selenium with
no network, walks the QC, clustering, scores and run-overview categories like a reader,
checks every figure renders and that the page loaded nothing that failed or came from the
network, and saves screenshots in tests/artifacts/.
"""

from __future__ import annotations

import itertools
import json
import re
import types
import zipfile
from pathlib import Path

import jinja2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import ARTIFACTS, REPO, page_problems, run_snakemake

from mscflow import plotting
from mscflow.cluster import plots as cluster_plots
from mscflow.config import load_schema, validate_config
from mscflow.report.overview import (
    CONFIG_COLUMNS,
    RUN_INFO_COLUMNS,
    SAMPLES_OVERVIEW_COLUMNS,
    SOFTWARE_COLUMNS,
    file_safe_name,
    flatten_config,
    overview_html,
    run_info,
    samples_overview,
    software_versions,
)
from mscflow.scoring import plots as scoring_plots
from mscflow.vocab import CELL_TYPE_ORDER

MAX_REPORT_BYTES = 25 * 1024 * 1024
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Columns every table of the report must hold (by file name; extra columns are allowed).
EXPECTED_COLUMNS = {
    "qc_summary.tsv": ["sample", "cells_in", "cells_out", "n_qc_fail", "n_doublet",
                       "threshold_min_counts", "threshold_max_pct_mito",
                       "threshold_doublet_score"],
    "resolution_agreement.tsv": ["clustering_a", "clustering_b", "n_clusters_a",
                                 "n_clusters_b", "adjusted_rand_index"],
    "cluster_sizes.tsv": ["sample"],
    "gene_set_report.tsv": ["set", "n_genes", "n_found", "missing"],
    "mean_scores.tsv": ["cluster", "cell_type", "sample", "tissue", "condition", "n_cells",
                        "gene_set", "mean_score"],
    "clusters.tsv": ["cluster", "tissue", "label", "margin", "fraction_agreeing",
                     "top_marker_genes"],
    "samples.tsv": list(SAMPLES_OVERVIEW_COLUMNS),
    "software_versions.tsv": list(SOFTWARE_COLUMNS),
    "config_used.tsv": list(CONFIG_COLUMNS),
    "run_info.tsv": list(RUN_INFO_COLUMNS),
    "findings.tsv": ["analysis", "contrast", "tissue", "unit", "metric", "direction", "effect",
                     "ci_low", "ci_high", "padj", "n_samples_condition",
                     "n_samples_reference", "named", "table_row"],
}

# Figures the issue asks for, per category (file names in the report).
EXPECTED_FIGURES = {
    "1. Quality control": {"qc_distributions.png", "doublet_scores.png"},
    "2. Clustering": {"umap_overview.png", "marker_dotplot.png", "resolution_comparison.png"},
    "3. Gene-set scores": {"umap_scores.png", "score_violins.png", "mean_scores_control.png",
                           "mean_scores_MSC.png"},
    "4. Annotation": {"annotation_dotplot.png"},
}


# --- pure functions of the style module and the run overview ---------------------------


def test_condition_palette_fixed_controls_first_and_distinct() -> None:
    pal = plotting.condition_palette(["MSC", "zeta", "control", "apoptotic_MSC", "alpha"])
    assert list(pal)[0] == "control"
    assert pal["control"] == plotting.CONDITION_COLOURS["control"]
    assert pal["MSC"] == plotting.CONDITION_COLOURS["MSC"]
    assert len(set(pal.values())) == len(pal)
    # An unknown condition keeps its colour whatever else the run holds.
    assert plotting.condition_palette(["alpha", "zeta"])["alpha"] == pal["alpha"]


def test_cell_type_palette_is_fixed_and_distinct() -> None:
    full = plotting.cell_type_palette(list(CELL_TYPE_ORDER) + ["new_type"])
    assert len(set(full.values())) == len(full)
    some = plotting.cell_type_palette(["t_cell", "kupffer_cell"])
    assert some["t_cell"] == full["t_cell"] and some["kupffer_cell"] == full["kupffer_cell"]


def _mean_scores_table() -> pd.DataFrame:
    """Two samples of one condition; cell type A split over two clusters in sample s1."""
    rows = [
        # cluster, cell_type, sample, tissue, condition, n_cells, gene_set, mean_score
        ("0", "A", "s1", "lung", "ctl", 30, "g", 1.0),
        ("1", "A", "s1", "lung", "ctl", 10, "g", 3.0),
        ("0", "A", "s2", "lung", "ctl", 100, "g", 0.0),
        ("2", "B", "s1", "lung", "ctl", 5, "g", -2.0),
        ("0", "A", "s3", "lung", "trt", 50, "g", 4.0),
        ("2", "B", "s3", "lung", "trt", 5, "g", 1.0),
    ]
    return pd.DataFrame(rows, columns=["cluster", "cell_type", "sample", "tissue",
                                       "condition", "n_cells", "gene_set", "mean_score"])


def test_cell_type_means_pool_clusters_then_average_samples() -> None:
    means = scoring_plots.cell_type_means(_mean_scores_table()).set_index(
        ["condition", "cell_type"])
    # s1: (30*1 + 10*3) / 40 = 1.5; s2: 0.0; samples weigh equally -> 0.75 (not 60/140).
    assert means.loc[("ctl", "A"), "mean_score"] == pytest.approx(0.75)
    assert means.loc[("ctl", "A"), "n_samples"] == 2
    assert means.loc[("ctl", "A"), "n_cells"] == 140
    assert means.loc[("trt", "A"), "mean_score"] == pytest.approx(4.0)


def test_mean_score_heatmap_shares_colour_scale_across_conditions() -> None:
    table = _mean_scores_table()
    limits = []
    for condition in ("ctl", "trt"):
        fig = scoring_plots.mean_score_heatmap(table, condition)
        mesh = fig.axes[0].collections[0]
        limits.append(mesh.get_clim())
        plt.close(fig)
    assert limits[0] == limits[1]
    assert limits[0][0] == -limits[0][1] > -np.inf
    with pytest.raises(ValueError, match="not in the mean score table"):
        scoring_plots.mean_score_heatmap(table, "absent")


def test_resolution_comparison_draws_counts_and_ari(tmp_path: Path) -> None:
    agreement = pd.DataFrame({
        "clustering_a": ["leiden_0.5", "leiden_0.5", "leiden_1", "leiden_1"],
        "clustering_b": ["leiden_0.5", "leiden_1", "leiden_0.5", "leiden_1"],
        "n_clusters_a": [5, 5, 9, 9], "n_clusters_b": [5, 9, 5, 9],
        "adjusted_rand_index": [1.0, 0.6, 0.6, 1.0],
    })
    fig = cluster_plots.resolution_comparison(agreement)
    bars = [p.get_height() for p in fig.axes[0].patches]
    assert bars == [5, 9]
    assert "clusters" in fig.axes[0].get_ylabel()
    plotting.save(fig, str(tmp_path / "res.png"))
    assert (tmp_path / "res.png").read_bytes().startswith(PNG_MAGIC)


def test_file_safe_name() -> None:
    assert file_safe_name("MSC") == "MSC"
    assert file_safe_name("apoptotic MSC (day 3)") == "apoptotic_MSC_day_3"
    assert file_safe_name("../x/y") == "x_y"
    assert file_safe_name("///") == "unnamed"


def test_samples_overview_joins_sheet_and_qc() -> None:
    sheet = pd.DataFrame({"sample": ["a", "b"], "tissue": ["lung", "liver"],
                          "condition": ["control", "MSC"], "replicate": ["1", "1"],
                          "species": ["mouse", "mouse"], "format": ["h5ad", "h5ad"],
                          "path": ["x", "y"]}).set_index("sample", drop=False)
    qc = pd.DataFrame({"sample": ["b", "a"], "cells_in": [200, 100], "cells_out": [150, 90]})
    out = samples_overview(sheet, qc)
    assert list(out.columns) == list(SAMPLES_OVERVIEW_COLUMNS)
    assert out.set_index("sample").loc["b", "pct_kept"] == 75.0
    with pytest.raises(ValueError, match="lacks sample"):
        samples_overview(sheet, qc.iloc[:1])


def test_flatten_config_and_run_info() -> None:
    cfg = {"seed": 7, "qc": {"nmads": 5, "flags": [1, 2]}, "demo": {"seed": 3},
           "samples": "s.tsv"}
    flat = flatten_config(cfg).set_index("key")["value"].to_dict()
    assert flat == {"demo.seed": "3", "qc.flags": "[1, 2]", "qc.nmads": "5", "samples": "s.tsv",
                    "seed": "7"}
    info = run_info(cfg).set_index("item")["value"]
    seeds = info[info.index.str.startswith("Random seed")]
    assert sorted(seeds) == ["3", "7"]
    assert info["mscflow version"] != "not installed"


def test_software_versions_cover_the_computing_stack() -> None:
    table = software_versions(["mscflow.cluster.core", "mscflow.plotting"])
    direct = set(table.loc[table["role"] == "direct", "package"].str.lower())
    assert {"mscflow", "scanpy", "anndata", "numpy", "pandas", "leidenalg", "umap-learn",
            "scikit-learn", "matplotlib", "seaborn", "snakemake"} <= direct
    assert table.iloc[0].tolist()[:1] == ["Python"]
    assert not table["package"].str.lower().duplicated().any()
    assert table["version"].str.match(r"^\d").all()


def test_overview_html_is_self_contained() -> None:
    page = overview_html(
        run_info({"seed": 0}),
        pd.DataFrame({"sample": ["a<b"], "cells_in": [10], "cells_out": [9]}),
        pd.DataFrame({"package": ["numpy"], "version": ["2.0"], "role": ["direct"]}),
        flatten_config({"seed": 0}), workflow_commit="abc123")
    assert "a&lt;b" in page and "abc123" in page
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)


# --- the explorer's data and the viewer-ready export -----------------------------------


def test_report_settings_are_the_schema_keys_with_the_schema_defaults() -> None:
    import dataclasses

    from mscflow.config import ConfigError, section_schema
    from mscflow.report.overview import ReportSettings

    schema = section_schema("report")["properties"]
    fields = {f.name for f in dataclasses.fields(ReportSettings)
              if not f.metadata.get("runtime")}
    assert fields == set(schema)
    built = ReportSettings.from_config({}, seed=3)
    assert built.explorer_max_cells == schema["explorer_max_cells"]["default"]
    assert built.findings_power == 0.8 and built.export_counts is True and built.seed == 3
    with pytest.raises(ConfigError, match="explorer_max_cells"):
        ReportSettings.from_config({"explorer_max_cells": 10}, seed=0)
    with pytest.raises(ConfigError, match="did you mean 'findings_power'"):
        ReportSettings.from_config({"findings_powr": 0.9}, seed=0)


def test_stratified_subsample_keeps_each_stratum_share_and_is_seeded() -> None:
    from mscflow.report.explorer import stratified_subsample

    strata = pd.Series(["a"] * 900 + ["b"] * 90 + ["c"] * 9 + ["d"])
    rows = stratified_subsample(strata, 100, seed=3)
    assert len(rows) == 100 and np.all(np.diff(rows) > 0)
    counts = strata.iloc[rows].value_counts()
    assert counts["a"] == 89 and counts["b"] == 9 and counts["c"] == 1 and counts["d"] == 1
    assert np.array_equal(rows, stratified_subsample(strata, 100, seed=3))
    assert not np.array_equal(rows, stratified_subsample(strata, 100, seed=4))
    assert np.array_equal(stratified_subsample(strata, 5000, seed=0), np.arange(1000))


def test_quantise_keeps_values_to_a_65535th_of_their_range() -> None:
    from mscflow.report.explorer import quantise

    values = np.array([0.0, 0.0, 1.234567, 3.0, 2.5])
    codes, lo, hi = quantise(values)
    back = lo + codes * (hi - lo) / 65535
    assert back[0] == 0.0 and np.abs(back - values).max() <= (hi - lo) / 65535 / 2 + 1e-12
    assert quantise(np.ones(3))[0].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="non-finite"):
        quantise(np.array([0.0, np.nan]))


def _embedded(page: str, element: str) -> bytes:
    """The decompressed content of a gzip+base64 ``<script id=element>`` of a page."""
    import base64
    import gzip

    blob = re.search(rf'<script id="{element}" type="application/octet-stream">(.*?)</script>',
                     page, flags=re.S).group(1)
    return gzip.decompress(base64.b64decode(blob))


def _decode_explorer(page: str) -> tuple[dict, bytes]:
    """The manifest and the decompressed data blob embedded in an explorer page."""
    manifest = json.loads(re.search(r'<script id="manifest" type="application/json">(.*?)'
                                    r"</script>", page, flags=re.S).group(1))
    return manifest, _embedded(page, "cells")


def _explorer_field(manifest: dict, data: bytes, name: str) -> np.ndarray:
    entry = next(f for f in manifest["fields"] if f["name"] == name)
    dtype = "<u2" if entry["levels"] > 255 else "u1"
    codes = np.frombuffer(data, dtype=dtype, count=entry["length"], offset=entry["offset"])
    if entry["kind"] == "categorical":
        return np.array(entry["categories"])[codes]
    return entry["lo"] + codes * (entry["hi"] - entry["lo"]) / entry["levels"]


def test_explorer_page_embeds_plotly_and_every_field_offline() -> None:
    from mscflow.report.explorer import explorer_data, explorer_html

    rng = np.random.default_rng(0)
    n = 400
    obs = pd.DataFrame({
        "leiden_1": rng.integers(0, 11, n).astype(str),
        "cell_type": rng.choice(["momf", "t_cell", "new_type"], n),
        "sample": rng.choice(["s1", "s2</script>"], n),
        "condition": rng.choice(["control", "MSC"], n),
        "tissue": "liver", "score_il10_stat3_response": rng.normal(size=n)})
    genes = pd.DataFrame({"Il10": np.where(rng.random(n) < 0.3, rng.gamma(2, 1, n), 0.0)})
    data = explorer_data(obs, rng.normal(size=(n, 2)), genes, cluster_key="leiden_1",
                         n_total=1000, seed=0)
    page = explorer_html(data, plotly_js="/* plotly stand-in __DATA__ </script> */")
    assert "Showing 400 of 1,000 cells" in page and "stratified by sample" in page
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)
    manifest, blob = _decode_explorer(page)
    names = [f["name"] for f in manifest["fields"]]
    assert names[:5] == ["leiden_1", "cell_type", "sample", "condition", "tissue"]
    assert "score_il10_stat3_response" in names and "gene:Il10" in names
    assert (_explorer_field(manifest, blob, "cell_type") == obs["cell_type"].to_numpy()).all()
    assert (_explorer_field(manifest, blob, "sample") == obs["sample"].to_numpy()).all()
    cluster = next(f for f in manifest["fields"] if f["name"] == "leiden_1")
    assert cluster["categories"][:3] == ["0", "1", "2"] and cluster["categories"][-1] == "10"
    il10 = _explorer_field(manifest, blob, "gene:Il10")
    assert np.abs(il10 - genes["Il10"].to_numpy()).max() <= genes["Il10"].max() / 255 / 2 + 1e-9
    score = _explorer_field(manifest, blob, "score_il10_stat3_response")
    truth = obs["score_il10_stat3_response"].to_numpy()
    assert np.abs(score - truth).max() <= np.ptp(truth) / 65535 / 2 + 1e-9
    assert (il10[genes["Il10"].to_numpy() == 0] == 0).all()
    # the stand-in is embedded compressed, byte for byte (its markers never replaced)
    assert _embedded(page, "plotly") == b"/* plotly stand-in __DATA__ </script> */"
    import plotly

    real = explorer_html(data)
    assert _embedded(real, "plotly") == plotly.offline.get_plotlyjs().encode()
    assert len(real) < len(plotly.offline.get_plotlyjs()) / 2
    assert real == explorer_html(data), "the page must be identical for identical data"


def _viewer_adata():
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    n, g = 50, 20
    counts = sp.random(n, g, density=0.3, format="csr", random_state=0, dtype=np.float32)
    counts.data = np.ceil(counts.data * 10)
    obs = pd.DataFrame({
        "sample": pd.Categorical(rng.choice(["s1", "s2"], n)),
        "cell_type": rng.choice(["momf", "t_cell", None], n).astype(object),
        "leiden_1": pd.Categorical(rng.integers(0, 3, n)),
        "n_genes": rng.integers(0, 100, n).astype(np.int64),
        "big": np.full(n, 2**40, dtype=np.int64),
        "maybe": pd.array(rng.choice([True, False, None], n), dtype="boolean"),
        "flag": rng.random(n) < 0.5,
        "score_x": rng.normal(size=n),
        "count_nullable": pd.array(rng.integers(0, 5, n), dtype="Int64"),
        "barcode": [f"AC{i:04d}" for i in range(n)],
    }, index=[f"c{i}" for i in range(n)])
    adata = ad.AnnData(X=sp.csr_matrix(np.log1p(counts.toarray())), obs=obs,
                       var=pd.DataFrame(index=[f"G{i}" for i in range(g)]),
                       layers={"counts": counts})
    adata.obsm["X_umap"] = rng.normal(size=(n, 2))
    adata.obsm["X_pca"] = rng.normal(size=(n, 5))
    adata.obsp["connectivities"] = sp.identity(n, format="csr")
    adata.uns["rank_genes_groups"] = {"params": {"method": "t-test"}}
    return adata


def test_viewer_ready_export_passes_cellxgene_checks_after_a_round_trip(tmp_path: Path,
                                                                        monkeypatch) -> None:
    import anndata as ad

    from mscflow.io import write_h5ad_atomic
    from mscflow.report import export
    from mscflow.report.export import viewer_problems, viewer_ready

    monkeypatch.setattr(export, "MAX_CATEGORIES", 20)  # per-cell text stays plain strings
    source = _viewer_adata()
    assert viewer_problems(source)  # the raw object has types cellxgene mishandles
    out = viewer_ready(source, cluster_key="leiden_1", target_sum=1e4)
    write_h5ad_atomic(out, tmp_path / "x.h5ad", compression="gzip")
    back = ad.read_h5ad(tmp_path / "x.h5ad")
    assert viewer_problems(back) == []
    assert back.X.dtype == np.float32 and back.X.format == "csc"
    assert (back.layers["counts"].toarray() == source.layers["counts"].toarray()).all()
    assert set(back.obsm) == {"X_umap", "X_pca"} and not back.obsp and "rank_genes_groups" \
        not in back.uns
    assert back.obs["cell_type"].dtype == "category" and back.obs["barcode"].dtype == object
    assert set(back.obs["cell_type"].cat.categories) <= {"momf", "t_cell", "NA"}
    assert list(back.obs["leiden_1"].cat.categories) == ["0", "1", "2"]
    assert back.obs["n_genes"].dtype == np.int32 and back.obs["big"].dtype == np.float32
    assert back.obs["flag"].dtype == bool and back.obs["score_x"].dtype == np.float32
    assert len(back.uns["cell_type_colors"]) == len(back.obs["cell_type"].cat.categories)
    assert "log1p" in back.uns["mscflow"]["X"]
    lean = viewer_ready(source, cluster_key="leiden_1", target_sum=1e4, keep_counts=False)
    assert not lean.layers


def test_viewer_problems_name_what_cellxgene_refuses() -> None:
    from mscflow.report.export import viewer_problems, viewer_ready

    good = viewer_ready(_viewer_adata(), cluster_key="leiden_1", target_sum=1e4)
    cases = {
        "obs names are not unique": lambda a: setattr(a, "obs_names", ["c0"] * a.n_obs),
        "embedding obsm['X_umap'] missing": lambda a: a.obsm.__setitem__(
            "X_umap", np.full((a.n_obs, 2), np.nan)),
        "not supported by cellxgene": lambda a: a.obs.__setitem__(
            "when", pd.Timestamp("2024-01-01")),
        "are not #rrggbb": lambda a: a.uns.__setitem__(
            "cell_type_colors", ["#ff0000ff"] * len(a.obs["cell_type"].cat.categories)),
        "not categorical": lambda a: a.uns.__setitem__("score_x_colors", ["#ff0000"]),
        "X must be float32": lambda a: setattr(a, "X", a.X.astype(np.float64)),
    }
    for message, spoil in cases.items():
        adata = good.copy()
        spoil(adata)
        assert any(message in p for p in viewer_problems(adata)), message


# --- captions of every report() in the rule files ----------------------------------------


def report_calls(text: str) -> list[str]:
    """The argument text of every ``report(...)`` call in a rule file."""
    calls = []
    for match in re.finditer(r"\breport\(", text):
        depth, pos = 1, match.end()
        while depth and pos < len(text):
            depth += {"(": 1, ")": -1}.get(text[pos], 0)
            pos += 1
        calls.append(text[match.end():pos - 1])
    return calls


def included_rule_files(snakefile: Path) -> list[Path]:
    """Rule files the Snakefile includes (recursively), in include order."""
    found: list[Path] = []
    for match in re.finditer(r"^\s*include:\s*[\"']([^\"']+)[\"']", snakefile.read_text(),
                             flags=re.M):
        path = (snakefile.parent / match.group(1)).resolve()
        if path not in found:
            found += [path, *included_rule_files(path)]
    return found


def test_every_report_item_in_the_rules_has_a_caption_and_category() -> None:
    rules = included_rule_files(REPO / "Snakefile")
    assert REPO / "workflow" / "rules" / "report.smk" in rules
    calls = [(path, call) for path in rules for call in report_calls(path.read_text())]
    assert len(calls) >= 20, calls
    for path, call in calls:
        caption = re.search(r"caption\s*=\s*[\"']([^\"']+)[\"']", call)
        assert caption, f"{path.name}: report() without caption: {call[:80]}"
        rst = (path.parent / caption.group(1)).resolve()
        assert rst.is_file() and rst.read_text().strip(), f"{path.name}: {rst} missing/empty"
        assert re.search(r"category\s*=", call), f"{path.name}: no category: {call[:80]}"


# --- the report of the demo run -----------------------------------------------------------


# Keeps the top of tall figures in view; the workflow profile should pass it by default.
REPORT_STYLESHEET = REPO / "workflow" / "report" / "report.css"


@pytest.fixture(scope="module")
def report_html(demo_run: Path) -> Path:
    run_snakemake(demo_run, "--report", "report.html", "--report-stylesheet",
                  str(REPORT_STYLESHEET))
    return demo_run / "report.html"


def report_data(html: str, name: str) -> dict:
    """A JSON object the report embeds as ``var <name> = {...};``."""
    match = re.search(rf"var {name} = (\{{.*?\}});\s*</script>", html, flags=re.S)
    assert match, f"report has no {name}"
    return json.loads(match.group(1))


def test_report_html_under_25_mb(report_html: Path) -> None:
    size = report_html.stat().st_size
    print(f"report.html: {size / 1e6:.1f} MB")
    assert 1e5 < size < MAX_REPORT_BYTES


def test_report_items_have_captions_files_and_columns(report_html: Path,
                                                      demo_run: Path) -> None:
    html = report_html.read_text()
    results = report_data(html, "results")
    categories = report_data(html, "categories")
    names = {Path(p).name for p in results}
    for category, figures in EXPECTED_FIGURES.items():
        in_category = {Path(p).name for items in categories[category].values() for p in items}
        assert figures <= in_category, (category, figures - in_category)
    assert {"run_overview.html", "samples.tsv", "software_versions.tsv", "config_used.tsv",
            "run_info.tsv", "qc_summary.tsv", "resolution_agreement.tsv",
            "clusters.tsv"} <= names
    for path, entry in results.items():
        caption = re.sub(r"<[^>]+>", "", entry["caption"]).strip()
        assert len(caption) > 40, f"{path}: caption missing or too short"
        assert "{{" not in caption and "snakemake.config" not in caption, path
        file = demo_run / path
        assert file.is_file() and file.stat().st_size > 0, path
        if file.suffix == ".png":
            assert file.read_bytes()[:8] == PNG_MAGIC, path
        elif file.suffix == ".tsv":
            table = pd.read_csv(file, sep="\t")
            assert len(table) > 0, path
            missing = set(EXPECTED_COLUMNS.get(file.name, [])) - set(table.columns)
            assert not missing, (path, missing)
    samples = pd.read_csv(demo_run / "results/report/samples.tsv", sep="\t")
    qc = pd.read_csv(demo_run / "results/qc/qc_summary.tsv", sep="\t")
    assert samples.set_index("sample")["cells_out"].to_dict() == qc.set_index("sample")[
        "cells_out"].to_dict()


@pytest.fixture(scope="module")
def report_zip(demo_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """report.zip of the demo run, unpacked; returns its report/report.html."""
    run_snakemake(demo_run, "--report", "report.zip", "--report-stylesheet",
                  str(REPORT_STYLESHEET))
    target = tmp_path_factory.mktemp("report_zip")
    with zipfile.ZipFile(demo_run / "report.zip") as archive:
        assert archive.testzip() is None
        archive.extractall(target)
    return target / "report" / "report.html"


def test_report_zip_unzips_with_index(report_zip: Path) -> None:
    index = report_zip
    assert index.is_file() and index.stat().st_size > 1e5
    data = sorted((index.parent / "data").rglob("*.png"))
    assert {p.name for p in data} >= set().union(*EXPECTED_FIGURES.values())
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in data)
    assert len(list((index.parent / "data").rglob("explorer.html"))) == 1


# --- the report in headless Chromium -----------------------------------------------------


def _click_link(driver, text: str, timeout: float = 20) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def find(d):
        links = [a for a in d.find_elements(By.CSS_SELECTOR, "nav a") if a.text.strip() == text]
        return links[-1] if links else False

    WebDriverWait(driver, timeout).until(find).click()


def _menu_rows(driver) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "nav table tbody tr")


def _rendered(driver):
    """Wait condition: the main pane shows a decoded image, or a frame."""
    from selenium.webdriver.common.by import By

    pane = driver.find_elements(By.CSS_SELECTOR, "#app > div > div")[-1]
    imgs = pane.find_elements(By.CSS_SELECTOR, "img")
    frames = pane.find_elements(By.CSS_SELECTOR, "iframe")
    if imgs and driver.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0", imgs[0]):
        return ("img", imgs[0])
    if frames:
        return ("iframe", frames[0])
    return False


def _view_rows(driver, seen: dict[str, dict]) -> None:
    """View the items of the menu under every setting of its label toggles."""
    from selenium.webdriver.common.by import By

    groups = [[i.get_attribute("id") for i in f.find_elements(By.CSS_SELECTOR, "input[type=radio]")]
              for f in driver.find_elements(By.CSS_SELECTOR, "nav fieldset")]
    for setting in itertools.product(*groups):
        for radio_id in setting:
            driver.find_element(By.CSS_SELECTOR, f"label[for='{radio_id}']").click()
        _view_shown_rows(driver, seen)


def _view_shown_rows(driver, seen: dict[str, dict]) -> None:
    """Click the eye of every item shown in the menu; record what the main pane renders."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    for index in range(len(_menu_rows(driver))):
        row = _menu_rows(driver)[index]
        eye = row.find_element(By.CSS_SELECTOR, "a[iconname=eye]")
        href = eye.get_attribute("href") or ""
        if href.startswith("data:"):  # a table: the eye downloads it
            name = re.search(r"filename=([^;]+);", href).group(1)
            seen[name] = {"kind": "download", "label": row.text}
            continue
        eye.click()  # React re-renders the pane within the click's event dispatch
        kind, element = WebDriverWait(driver, 30).until(_rendered)
        name = re.search(r"filename=([^;]+);", element.get_attribute("src")).group(1)
        width, top = driver.execute_script(
            "const pane = arguments[0].closest('.overflow-auto') || document.body;"
            "pane.scrollTop = 0;"
            "return [arguments[0].naturalWidth || 0,"
            " arguments[0].getBoundingClientRect().top - pane.getBoundingClientRect().top];",
            element)
        seen[name] = {"kind": kind, "label": row.text, "width": width, "top": top}


def _walk_category(driver, url: str, category: str) -> dict[str, dict]:
    """Open a category from the start page, then each subcategory, viewing every item."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    _click_link(driver, category)
    seen: dict[str, dict] = {}
    if _menu_rows(driver):
        _view_rows(driver, seen)
        return seen
    subcategories = [a.text.strip() for a in driver.find_elements(
        By.CSS_SELECTOR, "nav div.p-3 ul li a") if a.text.strip()]
    assert subcategories, f"{category}: neither items nor subcategories in the menu"
    for sub in subcategories:
        _click_link(driver, sub)
        _view_rows(driver, seen)
        _click_link(driver, category)
    return seen


def test_report_renders_in_headless_chromium(report_html: Path, browser) -> None:
    from selenium.webdriver.common.by import By

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.get("about:blank")
    page_problems(browser)  # drop what the browser did before the report
    url = report_html.resolve().as_uri()
    browser.get(url)
    assert browser.title == "Snakemake Report"
    menu = {a.text.strip() for a in browser.find_elements(By.CSS_SELECTOR, "nav a")}
    assert {"0. Run overview", "1. Quality control", "2. Clustering",
            "3. Gene-set scores"} <= menu, menu

    for category in ("1. Quality control", "2. Clustering", "3. Gene-set scores"):
        seen = _walk_category(browser, url, category)
        images = {n for n, v in seen.items() if v["kind"] == "img" and v["width"] > 0}
        assert EXPECTED_FIGURES[category] <= images, (category, seen)
        # A figure taller than the window must still show its top (workflow/report/report.css).
        clipped = {n: v["top"] for n, v in seen.items() if v["kind"] == "img" and v["top"] < 0}
        assert not clipped, f"{category}: figure tops cut off: {clipped}"
        slug = re.sub(r"\W+", "_", category.split(". ", 1)[1].lower())
        browser.save_screenshot(str(ARTIFACTS / f"report_{slug}.png"))

    # The QC figure a reader checks first, as a screenshot of its own.
    browser.get(url)
    _click_link(browser, "1. Quality control")
    if not _menu_rows(browser):  # the category lists subcategories first
        _click_link(browser, "Cell filters")
    row = next(r for r in _menu_rows(browser) if "QC distributions" in r.text)
    row.find_element(By.CSS_SELECTOR, "a[iconname=eye]").click()
    browser.save_screenshot(str(ARTIFACTS / "report_screenshot.png"))

    seen = _walk_category(browser, url, "0. Run overview")
    assert seen["run_overview.html"]["kind"] == "iframe", seen
    frame = browser.find_elements(By.CSS_SELECTOR, "#app > div > div")[-1].find_element(
        By.CSS_SELECTOR, "iframe")
    browser.switch_to.frame(frame)
    text = browser.find_element(By.TAG_NAME, "body").text
    browser.switch_to.default_content()
    for heading in ("Samples", "Software that computed the results", "Configuration used",
                    "Random seed", "lung_control_1", "scanpy"):
        assert heading in text, heading
    browser.save_screenshot(str(ARTIFACTS / "report_run_overview.png"))

    problems = page_problems(browser)
    assert not problems, "\n".join(problems)


def _open_item(driver, text: str):
    """Click the eye of the menu row whose text holds ``text``; return the rendered frame."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    row = next(r for r in _menu_rows(driver) if text in r.text)
    row.find_element(By.CSS_SELECTOR, "a[iconname=eye]").click()
    kind, element = WebDriverWait(driver, 60).until(_rendered)
    assert kind == "iframe", (text, kind)
    return element


def test_report_opens_on_the_findings(report_html: Path, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.get("about:blank")
    page_problems(browser)
    browser.get(report_html.resolve().as_uri())
    categories = report_data(report_html.read_text(), "categories")
    order = [a.text.strip() for a in browser.find_elements(By.CSS_SELECTOR, "nav a")
             if a.text.strip() in categories]
    assert order[0] == "0. Findings", order
    # the start page's text links to the findings
    intro = browser.find_element(By.CSS_SELECTOR, "div.prose")
    assert "Start with" in intro.text
    intro.find_element(By.LINK_TEXT, "0. Findings").click()
    WebDriverWait(browser, 20).until(lambda d: len(_menu_rows(d)) >= 4)
    labels = [r.text for r in _menu_rows(browser)]
    assert any("findings in words" in t for t in labels), labels
    assert any("interactive UMAP explorer" in t for t in labels), labels

    browser.switch_to.frame(_open_item(browser, "findings in words"))
    heading = browser.find_element(By.TAG_NAME, "h1").text
    sentences = browser.find_elements(By.CSS_SELECTOR, "li.finding")
    browser.switch_to.default_content()
    assert heading == "Findings" and len(sentences) > 10
    browser.save_screenshot(str(ARTIFACTS / "report_findings.png"))
    problems = page_problems(browser)
    assert not problems, "\n".join(problems)


def test_explorer_runs_inside_report_zip(report_zip: Path, browser) -> None:
    """The explorer inside the report (report.zip: items are files beside report.html;
    a single-file report.html embeds items as data: URLs, which Chromium refuses to open in
    a frame above 2 MB, so there the explorer is opened on its own)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.get("about:blank")
    page_problems(browser)
    browser.get(report_zip.resolve().as_uri())
    _click_link(browser, "0. Findings")
    browser.switch_to.frame(_open_item(browser, "interactive UMAP explorer"))
    WebDriverWait(browser, 120).until(
        lambda d: d.execute_script("return window.explorer && window.explorer.renders >= 1"))
    before = browser.execute_script("return document.getElementById('plot').data.length")
    Select(browser.find_element(By.ID, "colour")).select_by_value("condition")
    WebDriverWait(browser, 60).until(lambda d: d.execute_script(
        "return window.explorer.renderedField === 'condition'"))
    after = browser.execute_script(
        "return document.getElementById('plot').data.map(t => t.name.split(' (')[0])")
    browser.switch_to.default_content()
    assert before > 2 and sorted(after) == ["MSC", "control"], (before, after)
    browser.save_screenshot(str(ARTIFACTS / "report_explorer.png"))
    problems = page_problems(browser)
    assert not problems, "\n".join(problems)


# --- captions in step with the config ------------------------------------------------------

# Choices whose value a caption states: each caption must take it from the config.
CAPTION_CHOICES = {("qc", "doublet_method"), ("scoring", "method"),
                   ("cluster", "integration", "method")}


def _caption_config(overrides: dict) -> dict:
    cfg = validate_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    for keys, value in overrides.items():
        section = cfg
        for key in keys[:-1]:
            section = section[key]
        section[keys[-1]] = value
    return cfg


def _choices(keys: tuple[str, ...]) -> list[str]:
    schema = load_schema()
    node = schema
    for key in keys:
        node = node["properties"][key]
    return list(node["enum"])


@pytest.mark.parametrize("keys", sorted(CAPTION_CHOICES))
def test_captions_name_the_configured_method_and_no_other(keys: tuple[str, ...]) -> None:
    """Rendered with each choice of the setting, no caption names another choice as what
    the run did (the workflow description once said "scrublet doublets" under the
    classifier default)."""
    captions = sorted((REPO / "workflow" / "report").glob("*.rst"))
    for value in _choices(keys):
        # "scanpy", "none" and "mean" are also plain words or the library, "consensus" also
        # liana's resource; doublet method scanpy is sc.pp.scrublet, so its captions may
        # name scrublet
        others = [c for c in _choices(keys) if c != value
                  and c not in ("scanpy", "none", "mean", "consensus")
                  and not (value == "scanpy" and c == "scrublet")]
        cfg = _caption_config({keys: value})
        for rst in captions:
            text = jinja2.Template(rst.read_text()).render(
                snakemake=types.SimpleNamespace(config=cfg, params=types.SimpleNamespace(
                    condition="control"), wildcards={}))
            named = [o for o in others if re.search(rf"\b{o}s?\b", text, re.IGNORECASE)
                     and not re.search(rf"\b(or|for|method|e\.g\.) (``)?{o}", text, re.IGNORECASE)]
            assert not named, f"{rst.name} under {'.'.join(keys)}={value} names {named}"
