"""Batch integration on the demo: two processing batches (the sheet's `batch` column, balanced
across conditions) split cell types without integration; Harmony (the default) mixes them,
keeps the cell types apart and leaves scores and score shifts untouched."""

from __future__ import annotations

import shutil
from pathlib import Path

import anndata as ad
import pandas as pd
import pytest
import yaml
from helpers import run_snakemake

METRICS = "results/cluster/integration_metrics.tsv"


def truth_table(run: Path) -> pd.DataFrame:
    truth = pd.read_csv(run / "resources/demo/truth.tsv.gz", sep="\t")
    truth.index = truth["sample"] + ":" + truth["barcode"]
    return truth


def run_settings(run: Path):
    """The run's ClusterSettings (validated config, schema defaults filled)."""
    from mscflow.cluster.core import ClusterSettings
    from mscflow.config import validate_config

    cfg = validate_config(yaml.safe_load((run / "config/config.yaml").read_text()))
    table = pd.read_csv(run / METRICS, sep="\t")
    return ClusterSettings.from_config(cfg["cluster"], n_jobs=2, random_state=cfg["seed"],
                                       batch_key=table["batch_key"].iloc[0])


def test_harmony_mixes_the_demo_batches_and_keeps_cell_types(demo_run: Path) -> None:
    table = pd.read_csv(demo_run / METRICS, sep="\t").set_index("stage")
    print(table.drop(columns="note").to_string())
    assert list(table.index) == ["before", "after"]
    assert (table["batch_key"] == "batch").all() and (table["n_batches"] == 2).all()
    before, after = table.loc["before"], table.loc["after"]
    assert after["method"] == "harmony" and after["representation"] == "X_pca_harmony"
    assert before["ilisi"] < 0.3, "the demo's batches must separate without integration"
    assert after["ilisi"] >= 0.8
    assert after["celltype_asw"] >= before["celltype_asw"] - 0.05
    assert after["batch_asw"] > before["batch_asw"]
    assert after["clisi"] >= 0.9
    cells = pd.read_csv(demo_run / "results/annotate/cell_types.tsv.gz", sep="\t",
                        index_col="cell")
    truth = truth_table(demo_run).loc[cells.index]
    clean = ~truth["doublet"].to_numpy()
    accuracy = (cells["cell_type"][clean] == truth["cell_type"][clean]).mean()
    print(f"annotation accuracy with Harmony: {accuracy:.4f}")
    assert accuracy >= 0.95


def test_without_integration_cell_types_split_by_batch(demo_run: Path) -> None:
    """The clustering the run would have made without integration (same PCA, graph
    settings and seed) puts the cells of one type into clusters of one batch each."""
    from mscflow.cluster.integration_metrics import uncorrected_graph

    adata = ad.read_h5ad(demo_run / "results/annotate/annotated.h5ad", backed="r")
    plain = uncorrected_graph(adata, run_settings(demo_run))
    truth = truth_table(demo_run).loc[adata.obs_names]
    frame = pd.DataFrame({"cluster": plain.obs["leiden"].to_numpy(),
                          "batch": adata.obs["batch"].astype(str).to_numpy(),
                          "cell_type": truth["cell_type"].to_numpy()})
    frame = frame[~truth["doublet"].to_numpy()]
    share = pd.crosstab(frame["cluster"], frame["batch"], normalize="index").max(axis=1)
    frame["batch_pure"] = frame["cluster"].map(share) >= 0.9
    per_type = frame.groupby("cell_type").agg(
        cells=("cluster", "size"), clusters=("cluster", "nunique"),
        in_batch_pure_clusters=("batch_pure", "mean"))
    print(per_type.to_string())
    big = per_type[per_type["cells"] >= 200]
    split = big[(big["clusters"] >= 2) & (big["in_batch_pure_clusters"] >= 0.8)]
    assert len(split) >= len(big) / 2, per_type


@pytest.mark.slow
def test_score_shifts_identical_with_integration_off(demo_run: Path, tmp_path: Path) -> None:
    """Integration changes the graph only. Rerun from clustering with method none: the
    per-cell scores are identical, and so is the score-shift table once the cells carry the
    same labels. (The labels themselves may move for a few boundary cells, because the
    annotation labels clusters and the clusters come from the graph.)"""
    from mscflow.config import validate_config
    from mscflow.contrast.scores import per_sample_scores, score_shifts, select_score_columns
    from mscflow.contrast.stages import load_inputs

    off = tmp_path / "off"
    shutil.copytree(demo_run, off, symlinks=True, ignore=shutil.ignore_patterns("report*"))
    cfg_path = off / "config/config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["cluster"]["integration"] = {"method": "none"}
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_snakemake(off, "--cores", "2", "results/contrasts/score_shifts.tsv", METRICS)
    assert pd.read_csv(off / METRICS, sep="\t")["stage"].tolist() == ["uncorrected"]
    for table in ("results/scores/scores.parquet", "results/scores/marker_scores.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(off / table),
                                      pd.read_parquet(demo_run / table))

    cfg = validate_config(cfg)
    run = load_inputs(off / "results/annotate/annotated.h5ad", off / cfg["samples"],
                      cfg["contrasts"], cfg["contrast_settings"])
    labels_on = ad.read_h5ad(demo_run / "results/annotate/annotated.h5ad",
                             backed="r").obs["cell_type"].reindex(run.obs.index)
    changed = int((labels_on.astype(str) != run.obs["cell_type"].astype(str)).sum())
    print(f"cells labelled differently with integration off: {changed} of {len(labels_on)}")
    assert changed / len(labels_on) < 0.01
    run.obs["cell_type"] = labels_on
    st = run.settings
    per_sample = per_sample_scores(run.obs, select_score_columns(run.obs, st),
                                   st.score_threshold, st.score_prefix)
    same_labels = score_shifts(run.obs, run.contrasts, st, run.samples, per_sample=per_sample)
    shifts_on = pd.read_parquet(demo_run / "results/contrasts/score_shifts.parquet")
    pd.testing.assert_frame_equal(same_labels.reset_index(drop=True),
                                  shifts_on.reset_index(drop=True))

    shifts_off = pd.read_parquet(off / "results/contrasts/score_shifts.parquet")
    keys = ["contrast", "cell_type", "gene_set", "metric"]
    both = shifts_on.merge(shifts_off, on=keys, suffixes=("_on", "_off"))
    agree = (both["significant_on"] == both["significant_off"]).mean()
    print(f"score-shift rows with the same call on and off: {agree:.4f}")
    assert len(both) == len(shifts_on) and agree >= 0.98
