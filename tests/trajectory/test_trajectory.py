"""The trajectory stage on a synthetic monocyte -> MoMF continuum with a Kupffer branch.

The continuum is built in PCA space: a trunk of classical monocytes (position 0-0.35), MoMF
continuing the same direction (0.35-1) and Kupffer cells leaving the trunk's end in another
direction. Marker scores follow the position, an IL-10 programme rises in the last third,
and MSC samples hold more cells late.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import spearmanr

from mscflow.config import section_schema
from mscflow.contrast import ContrastSettings, parse_contrasts, permute_conditions
from mscflow.errors import ConfigError, InputDataError
from mscflow.trajectory import core as tj

N_DIMS = 10
TRUNK_END = 0.35


def _sheet(tissues=("liver",), replicates: int = 3) -> pd.DataFrame:
    rows = [{"sample": f"{t}_{c}_{r}", "tissue": t, "condition": c, "replicate": str(r)}
            for t in tissues for c in ("control", "MSC") for r in range(1, replicates + 1)]
    return pd.DataFrame(rows).set_index("sample", drop=False)


def _positions(rng: np.random.Generator, n: int, late: bool) -> np.ndarray:
    """Positions along the continuum; MSC samples (``late``) hold more cells late."""
    return rng.beta(1.6, 1.0, n) if late else rng.beta(1.0, 1.3, n)


def synthetic_run(tmp_path: Path, *, tissues=("liver",), cells: int = 110, seed: int = 0,
                  kupffer: int = 25, others: int = 20, rep_key: str = "X_pca",
                  drop_labels: tuple[str, ...] = ()) -> tuple[Path, Path, pd.DataFrame]:
    """An annotated h5ad and marker scores shaped like the workflow's; returns
    (h5ad path, marker-score parquet, per-cell truth with ``position`` and ``branch``)."""
    rng = np.random.default_rng(seed)
    axis_trunk, axis_kupffer = np.eye(N_DIMS)[0], np.eye(N_DIMS)[1]
    frames, reps = [], []
    for sample, row in _sheet(tissues).iterrows():
        t = _positions(rng, cells, row["condition"] == "MSC")
        label = np.where(t < TRUNK_END, "classical_monocyte", "momf").astype(object)
        pos = 4.0 * t[:, None] * axis_trunk
        s = rng.uniform(0, 1, kupffer)
        kup = 4.0 * TRUNK_END * axis_trunk + 3.0 * (0.15 + s)[:, None] * axis_kupffer
        other = np.full((others, N_DIMS), 9.0)
        coords = np.vstack([pos, kup, other]) + rng.normal(0, 0.12, (cells + kupffer + others,
                                                                     N_DIMS))
        reps.append(coords)
        frames.append(pd.DataFrame({
            "sample": sample, "tissue": row["tissue"], "condition": row["condition"],
            "cell_type": [*label, *["kupffer_cell"] * kupffer, *["t_cell"] * others],
            "position": [*t, *[np.nan] * (kupffer + others)],
            "truth_branch": [*np.where(t < TRUNK_END, "trunk", "monocyte_derived"),
                             *["kupffer_cell"] * kupffer, *["none"] * others],
        }, index=[f"{sample}:c{i}" for i in range(cells + kupffer + others)]))
    obs = pd.concat(frames)
    obs = obs[~obs["cell_type"].isin(drop_labels)]
    rep = np.vstack(reps)[pd.concat(frames).index.isin(obs.index)]
    n = len(obs)
    t = obs["position"].fillna(-1).to_numpy()
    noise = rng.normal(0, 0.15, (n, 4))
    markers = pd.DataFrame({
        "classical_monocyte": np.where(t >= 0, 1 - t, np.where(obs["cell_type"] == "t_cell",
                                                               -0.5, 0.0)) + noise[:, 0],
        "momf": np.where(t >= 0, t, 0.0) + noise[:, 1],
        "kupffer_cell": np.where(obs["cell_type"] == "kupffer_cell", 1.0, 0.0) + noise[:, 2],
        "t_cell": np.where(obs["cell_type"] == "t_cell", 1.0, 0.0) + noise[:, 3],
    }, index=obs.index)
    markers.index.name = "cell"
    obs["score_il10_stat3_response"] = np.clip(t - 2 / 3, 0, None) * 3 + rng.normal(0, .1, n)
    obs["score_pan_macrophage"] = np.where(t >= 0, t, 1.0) + rng.normal(0, .1, n)
    bins = np.digitize(obs["position"].fillna(2).to_numpy(), [0.2, 0.35, 0.55, 0.75, 1.5])
    obs["leiden_1"] = np.where(obs["cell_type"] == "kupffer_cell", "kc",
                               np.where(obs["cell_type"] == "t_cell", "t", bins.astype(str)))
    for col in ("sample", "tissue", "condition", "cell_type", "leiden_1"):
        obs[col] = obs[col].astype("category")
    truth = obs[["position", "truth_branch"]].copy()
    obs = obs.drop(columns=["position", "truth_branch"])
    x = sp.random(n, 30, density=0.2, format="csr", random_state=seed, dtype=np.float32)
    adata = ad.AnnData(x, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(30)]),
                       obsm={rep_key: rep.astype(np.float32), "X_umap": rep[:, :2].copy()},
                       uns={"neighbors": {"params": {"n_neighbors": 15, "method": "umap",
                                                     **({"n_pcs": N_DIMS} if rep_key == "X_pca"
                                                        else {"use_rep": rep_key})}}})
    if rep_key != "X_pca":
        adata.obsm["X_pca"] = rng.normal(size=(n, N_DIMS)).astype(np.float32)  # not used
    h5ad, scores = tmp_path / "annotated.h5ad", tmp_path / "marker_scores.parquet"
    adata.write_h5ad(h5ad)
    markers.to_parquet(scores)
    return h5ad, scores, truth


def settings(**section) -> tj.TrajectorySettings:
    """Settings with the Gaussian kernel unless told (the umap kernel's first use in a
    process imports umap-learn, which compiles pynndescent: one test pays for that)."""
    return tj.TrajectorySettings.from_config({"kernel": "gauss", **section}, random_state=0,
                                             n_jobs=1)


def contrasts(sheet: pd.DataFrame, tissues=("liver",)):
    return parse_contrasts([{"name": f"{t}_MSC", "tissue": t, "condition": "MSC",
                             "reference": "control"} for t in tissues], sheet)


@pytest.fixture(scope="module")
def liver(tmp_path_factory: pytest.TempPathFactory):
    """The synthetic liver through the stage once: (outputs, truth, h5ad, marker scores)."""
    h5ad, scores, truth = synthetic_run(tmp_path_factory.mktemp("liver"))
    out = tj.trajectory_stage(h5ad, scores, settings(), cluster_key="leiden_1")
    return out, truth, h5ad, scores


# --- settings -----------------------------------------------------------------------------


def test_settings_are_the_schema_keys_and_reject_inconsistent_lineages() -> None:
    st = settings()
    assert set(st.to_config()) == set(section_schema("trajectory")["properties"])
    assert st.labels[:2] == ["classical_monocyte", "nonclassical_monocyte"]
    assert st.branch_of(pd.Series(["momf", "kupffer_cell", "b_cell"])).tolist()[:2] == [
        "monocyte_derived", "kupffer_cell"]
    with pytest.raises(ConfigError, match="root_label 'momf' is not one of trajectory.trunk"):
        settings(root_label="momf")
    with pytest.raises(ConfigError, match="label 'momf' is in both"):
        settings(branches={"a": ["momf"], "b": ["momf"]})
    with pytest.raises(ConfigError, match="'trunk' names the shared start"):
        settings(branches={"trunk": ["momf"]})
    with pytest.raises(ConfigError, match="did you mean 'late_quantile'"):
        settings(late_quantil=0.5)
    with pytest.raises(ConfigError, match=r"tissue\(s\) \['lvr'\]"):
        tj.check_trajectory_config({"tissues": ["lvr"]}, _sheet())
    with pytest.raises(ConfigError, match="root_cells"):
        tj.check_trajectory_config({"root_cells": {"lung": "x"}}, _sheet())


# --- the continuum ------------------------------------------------------------------------


def test_pseudotime_follows_the_planted_position(liver) -> None:
    out, truth, _, _ = liver
    cells = out["cells"].set_index("cell")
    assert set(cells["cell_type"]) == {"classical_monocyte", "momf", "kupffer_cell"}
    timed = cells.join(truth)
    on_path = timed[timed["position"].notna()]
    rho = spearmanr(on_path["pseudotime"], on_path["position"]).statistic
    assert rho >= 0.9, rho
    root = cells[cells["is_root"]]
    assert len(root) == 1 and root["cell_type"].item() == "classical_monocyte"
    assert truth.loc[root.index[0], "position"] < 0.05
    assert root["pseudotime"].item() == 0.0
    assert (timed["branch"] == timed["truth_branch"]).all()
    tissues = out["tissues"].set_index("tissue")
    assert tissues.loc["liver", "status"] == "computed"
    assert tissues.loc["liver", "root_choice"] == "auto"
    assert tissues.loc["liver", "use_rep"] == "X_pca"
    assert tissues.loc["liver", "n_connected"] == len(cells)


def test_paga_links_neighbouring_stages(liver) -> None:
    out = liver[0]
    edges = out["edges"]
    strong = edges[edges["connectivity"] >= 0.05]
    pairs = {frozenset(p) for p in zip(strong["group_a"], strong["group_b"], strict=True)}
    assert {frozenset({"0", "1"}), frozenset({"1", "2"}), frozenset({"2", "3"})} <= pairs
    assert frozenset({"0", "4"}) not in pairs  # the two ends of the continuum
    tree = edges[edges["in_tree"]]
    assert len(tree) == edges.loc[:, ["group_a", "group_b"]].stack().nunique() - 1
    h5 = out["h5ad"]
    assert {"pseudotime", "branch", "paga_group", "is_root"} <= set(h5.obs.columns)
    info = h5.uns["trajectory"]["liver"]
    assert info["root_cell"] == out["cells"].loc[out["cells"]["is_root"], "cell"].item()
    assert h5.obsm["X_diffmap"].shape[0] == h5.n_obs


def test_il10_programme_rises_along_pseudotime(liver) -> None:
    bins = liver[0]["bins"]
    il10 = bins[(bins["gene_set"] == "il10_stat3_response") & (bins["level"] == "condition")
                & (bins["branch"] == "monocyte_derived")]
    for _, line in il10.groupby("condition"):
        means = line.sort_values("bin")["mean"].to_numpy()
        third = len(means) // 3
        assert np.nanmean(means[-third:]) > np.nanmean(means[:third]) + 0.3, means
        assert (np.diff(means[-third:]) > 0).all(), means  # rising through the last third
    per_sample = bins[(bins["level"] == "sample") & bins["mean"].notna()]
    assert (per_sample["n_cells"] >= 5).all()
    assert set(per_sample["sample"]) == set(_sheet().index)


def test_msc_shift_is_found_and_permuted_labels_give_no_call(liver) -> None:
    out, _, _, _ = liver
    sheet, cs = _sheet(), ContrastSettings.from_config({})
    cells = out["cells"].set_index("cell")
    table, per_sample = tj.trajectory_shifts(cells, out["tissues"], sheet, contrasts(sheet),
                                             cs, settings())
    main = table[table["branch"] == "monocyte_derived"].set_index("metric")
    assert main["significant"].all() and (main["effect"] > 0).all(), main
    assert set(per_sample.columns) >= {"median_pseudotime", "frac_late", "late_threshold"}
    for seed in range(3):
        permuted = permute_conditions(sheet, seed=seed)
        shuffled = cells.assign(condition=cells["sample"].map(permuted["condition"]))
        null, _ = tj.trajectory_shifts(shuffled, out["tissues"], permuted,
                                       contrasts(permuted), cs, settings())
        assert not null["significant"].any(), null[["branch", "metric", "padj"]]


def test_stage_is_deterministic(liver, tmp_path: Path) -> None:
    out, _, h5ad, scores = liver
    again = tj.trajectory_stage(h5ad, scores, settings(), cluster_key="leiden_1")
    pd.testing.assert_frame_equal(again["cells"], out["cells"])
    pd.testing.assert_frame_equal(again["bins"], out["bins"])


# --- choices and skips --------------------------------------------------------------------


def test_root_from_config_and_a_bad_root_cell(liver) -> None:
    out, truth, h5ad, scores = liver
    cell = truth.index[(truth["position"] > 0.1) & (truth["position"] < 0.2)][0]
    chosen = tj.trajectory_stage(h5ad, scores, settings(root_cells={"liver": cell}),
                                 cluster_key="leiden_1")
    row = chosen["tissues"].set_index("tissue").loc["liver"]
    assert row["root_cell"] == cell and row["root_choice"] == "config"
    with pytest.raises(ConfigError, match="root_cells.liver: cell 'nope'"):
        tj.trajectory_stage(h5ad, scores, settings(root_cells={"liver": "nope"}),
                            cluster_key="leiden_1")


def test_tissues_without_root_label_or_cells_are_skipped_with_notes(tmp_path: Path) -> None:
    h5ad, scores, _ = synthetic_run(tmp_path, tissues=("liver", "lung"), cells=40, kupffer=5)
    few = tj.trajectory_stage(h5ad, scores, settings(min_cells=300), cluster_key="leiden_1")
    assert (few["tissues"]["status"] == "skipped").all()
    assert few["tissues"]["note"].str.contains("need >= trajectory.min_cells = 300").all()
    assert few["cells"]["pseudotime"].isna().all() and few["h5ad"].n_obs == 0
    assert few["bins"].empty
    sheet = _sheet(("liver", "lung"))
    table, _ = tj.trajectory_shifts(few["cells"], few["tissues"], sheet,
                                    contrasts(sheet, ("liver", "lung")),
                                    ContrastSettings.from_config({}), settings())
    assert (table["status"] == "skipped").all() and len(table) == 4
    assert table["note"].str.startswith("trajectory of tissue").all()

    no_root = tj.trajectory_stage(h5ad, scores, settings(root_label="nonclassical_monocyte"),
                                  cluster_key="leiden_1")
    assert no_root["tissues"]["note"].str.contains(
        "root label 'nonclassical_monocyte' absent from tissue").all()
    only_lung = tj.trajectory_stage(h5ad, scores, settings(tissues=["lung"]),
                                    cluster_key="leiden_1")
    assert only_lung["tissues"]["tissue"].tolist() == ["lung"]
    table, _ = tj.trajectory_shifts(only_lung["cells"], only_lung["tissues"], sheet,
                                    contrasts(sheet, ("liver", "lung")),
                                    ContrastSettings.from_config({}), settings(tissues=["lung"]))
    liver_rows = table[table["tissue"] == "liver"]
    assert (liver_rows["status"] == "skipped").all()
    assert liver_rows["note"].str.contains("not among trajectory.tissues").all()


def test_disconnected_branch_is_reported(tmp_path: Path) -> None:
    h5ad, scores, _ = synthetic_run(tmp_path, cells=60)
    adata = ad.read_h5ad(h5ad)
    kupffer = (adata.obs["cell_type"] == "kupffer_cell").to_numpy()
    adata.obsm["X_pca"][kupffer] += 50.0  # far from everything: its own component
    adata.write_h5ad(h5ad)
    out = tj.trajectory_stage(h5ad, scores, settings(), cluster_key="leiden_1")
    row = out["tissues"].iloc[0]
    assert row["status"] == "computed" and "not connected to the root" in row["note"]
    cells = out["cells"]
    assert cells.loc[cells["cell_type"] == "kupffer_cell", "pseudotime"].isna().all()
    sheet = _sheet()
    table, _ = tj.trajectory_shifts(cells, out["tissues"], sheet, contrasts(sheet),
                                    ContrastSettings.from_config({}), settings())
    kc = table[table["branch"] == "kupffer_cell"]
    assert (kc["status"] == "skipped").all()
    assert kc["note"].str.contains("none of its 150 cells is connected").all()


def test_lineage_in_one_cluster_gets_pseudotime_and_an_edgeless_paga(tmp_path: Path) -> None:
    """A tissue whose lineage cells all sit in one of the run's clusters (the demo's lung)
    has nothing for PAGA to abstract: one group, no edges; pseudotime is still computed."""
    from mscflow.trajectory.plots import paga_figure

    h5ad, scores, _ = synthetic_run(tmp_path, cells=60, kupffer=0)
    adata = ad.read_h5ad(h5ad)
    adata.obs["leiden_1"] = "0"
    adata.write_h5ad(h5ad)
    out = tj.trajectory_stage(h5ad, scores, settings(), cluster_key="leiden_1")
    row = out["tissues"].iloc[0]
    assert row["status"] == "computed" and row["n_paga_groups"] == 1
    assert out["edges"].empty
    lineage = out["cells"]["cell_type"].isin(["classical_monocyte", "momf"])
    assert out["cells"].loc[lineage, "pseudotime"].notna().all()
    assert paga_figure(out["h5ad"], 0.05).axes


def test_graph_uses_the_integrated_representation(tmp_path: Path) -> None:
    h5ad, scores, truth = synthetic_run(tmp_path, cells=60, rep_key="X_pca_harmony")
    out = tj.trajectory_stage(h5ad, scores, settings(), cluster_key="leiden_1")
    assert out["tissues"].loc[0, "use_rep"] == "X_pca_harmony"
    cells = out["cells"].set_index("cell").join(truth)
    on_path = cells[cells["position"].notna()]
    assert spearmanr(on_path["pseudotime"], on_path["position"]).statistic >= 0.9
    with pytest.raises(InputDataError, match="representation 'X_scvi' is not in obsm"):
        tj.trajectory_stage(h5ad, scores, settings(use_rep="X_scvi"), cluster_key="leiden_1")


@pytest.mark.slow  # the first umap kernel of a process imports umap-learn (~20 s of CPU)
def test_umap_kernel_the_default_orders_the_continuum(liver) -> None:
    _, truth, h5ad, scores = liver
    default = tj.TrajectorySettings.from_config({}, random_state=0, n_jobs=1)
    assert default.kernel == "umap"
    out = tj.trajectory_stage(h5ad, scores, default, cluster_key="leiden_1")
    cells = out["cells"].set_index("cell").join(truth)
    on_path = cells[cells["position"].notna()]
    assert spearmanr(on_path["pseudotime"], on_path["position"]).statistic >= 0.9


def test_graph_built_by_the_integration_is_reused(tmp_path: Path) -> None:
    import scanpy as sc

    h5ad, scores, truth = synthetic_run(tmp_path, cells=60)
    adata = ad.read_h5ad(h5ad)
    sc.pp.neighbors(adata, n_neighbors=15, use_rep="X_pca", method="gauss")  # stands for BBKNN
    adata.uns["integration"] = {"method": "bbknn", "graph_built": True, "use_rep": "X_pca"}
    adata.write_h5ad(h5ad)
    out = tj.trajectory_stage(h5ad, scores, settings(), cluster_key="leiden_1")
    assert out["tissues"].loc[0, "use_rep"] == "run graph (bbknn) restricted to the subset"
    cells = out["cells"].set_index("cell").join(truth)
    on_path = cells[cells["position"].notna()]
    assert spearmanr(on_path["pseudotime"], on_path["position"]).statistic >= 0.9
    recomputed = tj.trajectory_stage(h5ad, scores, settings(use_rep="X_pca"),
                                     cluster_key="leiden_1")
    assert recomputed["tissues"].loc[0, "use_rep"] == "X_pca"


def test_subset_leiden_groups_and_missing_inputs(tmp_path: Path) -> None:
    h5ad, scores, _ = synthetic_run(tmp_path, cells=60)
    out = tj.trajectory_stage(h5ad, scores, settings(cluster_resolution=0.5),
                              cluster_key="not_used")
    assert out["tissues"].loc[0, "n_paga_groups"] >= 2
    with pytest.raises(InputDataError, match="cluster column 'leiden_9'"):
        tj.trajectory_stage(h5ad, scores, settings(), cluster_key="leiden_9")
    pd.read_parquet(scores).iloc[:10].to_parquet(tmp_path / "short.parquet")
    with pytest.raises(InputDataError, match="marker scores lack"):
        tj.trajectory_stage(h5ad, tmp_path / "short.parquet", settings(),
                            cluster_key="leiden_1")


def test_read_lineage_takes_only_the_lineage_rows(liver) -> None:
    _, _, h5ad, _ = liver
    full = ad.read_h5ad(h5ad)
    sub, obs = tj.read_lineage(h5ad, settings())
    assert len(obs) == full.n_obs
    expected = full.obs_names[full.obs["cell_type"].isin(settings().labels)]
    assert list(sub.obs_names) == list(expected)
    assert (sub.X != full[expected].X).nnz == 0
    np.testing.assert_array_equal(sub.obsm["X_pca"], full[expected].obsm["X_pca"])


# --- figures ------------------------------------------------------------------------------


def test_figures_draw_every_tissue_and_branch(liver) -> None:
    from mscflow.trajectory.plots import (
        density_figure,
        paga_figure,
        programme_figure,
        pseudotime_density,
    )

    out = liver[0]
    fig = paga_figure(out["h5ad"], 0.05)
    assert fig.axes[0].get_title().startswith("liver:")
    fig = programme_figure(out["bins"], ["il10_stat3_response", "absent_set"])
    assert len([a for a in fig.axes if a.get_visible()]) == 2  # 2 branches x 1 set
    density = pseudotime_density(out["cells"])
    assert set(density["branch"]) == {"monocyte_derived", "kupffer_cell"}
    area = density.groupby(["branch", "sample"]).apply(
        lambda d: np.trapezoid(d["density"], d["pseudotime"]), include_groups=False)
    assert ((area > 0.5) & (area < 1.05)).all(), area  # kernel mass beyond [0, 1] is cut
    assert density_figure(out["cells"], 0.75).axes
    empty = out["cells"].assign(pseudotime=np.nan)
    for fig in (density_figure(empty, 0.75), programme_figure(out["bins"].iloc[:0], ["x"]),
                paga_figure(ad.AnnData(), 0.05)):
        assert fig.axes[0].texts  # the message says why nothing is drawn
