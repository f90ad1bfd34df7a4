"""The trajectory stage on the demo (planted liver monocyte -> MoMF continuum) and on the real
Tabula Muris lung channel."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from helpers import TABULA_MURIS, make_workdir, run_snakemake
from scipy.stats import spearmanr

from mscflow.contrast import ContrastSettings, parse_contrasts, permute_conditions
from mscflow.inputs.samplesheet import read_sample_sheet
from mscflow.trajectory import core as tj

OUT = "results/trajectory"
MIN_SPEARMAN = 0.8


def _cells(run: Path) -> pd.DataFrame:
    return pd.read_parquet(run / OUT / "pseudotime.parquet").set_index("cell")


def _truth(run: Path) -> pd.DataFrame:
    truth = pd.read_csv(run / "resources/demo/truth.tsv.gz", sep="\t")
    return truth.set_index(truth["sample"] + ":" + truth["barcode"])


def test_liver_pseudotime_follows_the_planted_position(demo_run: Path) -> None:
    cells = _cells(demo_run).join(_truth(demo_run)[["trajectory_position"]])
    liver = cells[(cells["tissue"] == "liver") & cells["trajectory_position"].notna()
                  & cells["pseudotime"].notna()]
    assert len(liver) > 200
    rho = spearmanr(liver["pseudotime"], liver["trajectory_position"]).statistic
    print(f"liver: Spearman(pseudotime, planted position) = {rho:.3f} over {len(liver)} cells")
    assert rho >= MIN_SPEARMAN
    tissues = pd.read_csv(demo_run / OUT / "tissues.tsv", sep="\t").set_index("tissue")
    root = tissues.loc["liver", "root_cell"]
    assert tissues.loc["liver", "status"] == "computed"
    assert cells.loc[root, "cell_type"] == "classical_monocyte" and cells.loc[root, "is_root"]
    assert root in (demo_run / "logs/trajectory/trajectory.log").read_text()
    h5 = ad.read_h5ad(demo_run / OUT / "trajectory.h5ad", backed="r")
    assert h5.uns["trajectory"]["liver"]["root_cell"] == root
    assert {"pseudotime", "branch", "paga_group"} <= set(h5.obs.columns)


def test_il10_programme_rises_along_pseudotime(demo_run: Path) -> None:
    spec = json.loads((demo_run / "resources/demo/spec.json").read_text())
    bins = pd.read_csv(demo_run / OUT / "programme_bins.tsv", sep="\t", keep_default_na=False,
                       na_values=["NA"])
    il10 = bins[(bins["tissue"] == "liver") & (bins["branch"] == "monocyte_derived")
                & (bins["gene_set"] == spec["trajectory_il10_set"])
                & (bins["level"] == "condition")]
    assert set(il10["condition"]) == {"control", "MSC"}
    for condition, line in il10.groupby("condition"):
        means = line.sort_values("bin")["mean"].to_numpy()
        # Bins are equal-count over the whole tissue and MSC samples hold most late cells
        # (planted), so the controls' last bins can lack min_cells_per_bin cells in every
        # sample (mean NA): compare along the bins each condition fills.
        means = means[np.isfinite(means)]
        assert len(means) >= 6, means
        third = len(means) // 3
        print(condition, np.round(means, 2))
        assert np.nanmean(means[-third:]) > np.nanmean(means[:third]) + 0.2, means
        assert np.nanargmax(means) >= len(means) - third, means


def test_msc_shift_to_later_pseudotime_and_no_call_when_permuted(demo_run: Path) -> None:
    shifts = pd.read_csv(demo_run / OUT / "shifts.tsv", sep="\t")
    main = shifts[(shifts["tissue"] == "liver")
                  & (shifts["branch"] == "monocyte_derived")].set_index("metric")
    print(main[["effect", "ci_low", "ci_high", "pvalue", "padj"]])
    assert (main["effect"] > 0).all() and (main["status"] == "tested").all()
    assert main.loc["frac_late", "significant"]
    summary = pd.read_csv(demo_run / "results/contrasts/summary.tsv", sep="\t")
    assert set(summary.loc[summary["analysis"] == "trajectory", "contrast"]) == {
        "lung_MSC_vs_control", "liver_MSC_vs_control"}

    sheet = read_sample_sheet(demo_run / "config/samples.tsv")
    cells = _cells(demo_run)
    tissues = pd.read_csv(demo_run / OUT / "tissues.tsv", sep="\t", keep_default_na=False)
    settings = tj.TrajectorySettings.from_config({}, random_state=0, n_jobs=1)
    for seed in range(3):
        permuted = permute_conditions(sheet, seed=seed)
        contrasts = parse_contrasts(
            [{"name": t, "tissue": t, "condition": "MSC", "reference": "control"}
             for t in ("lung", "liver")], permuted)
        table, _ = tj.trajectory_shifts(
            cells.assign(condition=cells["sample"].map(permuted["condition"])), tissues,
            permuted, contrasts, ContrastSettings.from_config({}), settings)
        assert (table["status"] == "tested").sum() >= 4
        assert not table["significant"].any(), table[["contrast", "branch", "metric", "padj"]]


def test_figures_are_written(demo_run: Path) -> None:
    for name in ("paga_umap", "programmes_along_pseudotime", "density_along_pseudotime"):
        assert (demo_run / OUT / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    edges = pd.read_csv(demo_run / OUT / "paga_edges.tsv", sep="\t")
    tree = edges[(edges["tissue"] == "liver") & edges["in_tree"]]
    pairs = {frozenset(p) for p in zip(tree["label_a"], tree["label_b"], strict=True)}
    assert frozenset({"classical_monocyte", "momf"}) in pairs  # the planted continuum


@pytest.mark.workflow
def test_tabula_muris_lung_channel(tmp_path: Path) -> None:
    """One real, unreplicated lung sample: the stage runs, reports what it found and tests
    nothing (there is no contrast)."""
    workdir = make_workdir(tmp_path / "tm", with_contrasts=False)
    pd.DataFrame([{
        "sample": "tm_lung_P7_8", "tissue": "lung", "condition": "untreated", "replicate": 1,
        "species": "mouse", "path": str(TABULA_MURIS), "format": "10x_mtx", "layer": "",
    }]).to_csv(workdir / "config/samples.tsv", sep="\t", index=False)
    run_snakemake(workdir, "--cores", "2", f"{OUT}/tissues.tsv", f"{OUT}/shifts.tsv",
                  f"{OUT}/plots/paga_umap.png", f"{OUT}/plots/density_along_pseudotime.png",
                  f"{OUT}/plots/programmes_along_pseudotime.png")
    tissues = pd.read_csv(workdir / OUT / "tissues.tsv", sep="\t", keep_default_na=False)
    print(tissues.T)
    assert tissues["tissue"].tolist() == ["lung"]
    row = tissues.iloc[0]
    cells = _cells(workdir)
    if row["status"] == "computed":
        assert cells["pseudotime"].between(0, 1).sum() >= 50
        assert cells.loc[row["root_cell"], "cell_type"] == "classical_monocyte"
    else:
        assert row["note"] and cells["pseudotime"].isna().all()
    assert pd.read_csv(workdir / OUT / "shifts.tsv", sep="\t").empty
