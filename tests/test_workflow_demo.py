"""End-to-end checks of the demo run against the planted truth."""

from __future__ import annotations

import hashlib
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import make_workdir, run_snakemake
from sklearn.metrics import adjusted_rand_score, roc_auc_score

MACROPHAGES = {"alveolar_macrophage", "interstitial_macrophage", "kupffer_cell", "momf"}
MYELOID = MACROPHAGES | {"classical_monocyte"}


def truth_table(run: Path) -> pd.DataFrame:
    truth = pd.read_csv(run / "resources/demo/truth.tsv.gz", sep="\t")
    truth.index = truth["sample"] + ":" + truth["barcode"]
    return truth


def all_metrics(run: Path) -> pd.DataFrame:
    files = sorted((run / "results/qc").glob("*_metrics.tsv.gz"))
    return pd.concat([pd.read_csv(f, sep="\t") for f in files]).set_index("cell")


def test_qc_recovers_planted_low_quality_cells(demo_run: Path) -> None:
    metrics = all_metrics(demo_run)
    truth = truth_table(demo_run).loc[metrics.index]
    flagged = metrics["qc_fail"].astype(bool)
    planted = truth["low_quality"].astype(bool)
    precision = (flagged & planted).sum() / flagged.sum()
    recall = (flagged & planted).sum() / planted.sum()
    assert precision >= 0.9, precision
    assert recall >= 0.9, recall


def test_leiden_agrees_with_planted_cell_types(demo_run: Path) -> None:
    obs = ad.read_h5ad(demo_run / "results/annotate/annotated.h5ad", backed="r").obs
    truth = truth_table(demo_run).loc[obs.index]
    clean = ~truth["doublet"].to_numpy()
    ari = adjusted_rand_score(truth["cell_type"][clean], obs["leiden_1"][clean])
    assert ari >= 0.7, ari


def test_macrophage_score_separates_macrophages(demo_run: Path) -> None:
    scores = pd.read_parquet(demo_run / "results/scores/scores.parquet")
    truth = truth_table(demo_run).loc[scores.index]
    clean = ~truth["doublet"].to_numpy()
    is_mac = truth["cell_type"].isin(MACROPHAGES).to_numpy()[clean]
    auroc = roc_auc_score(is_mac, scores["pan_macrophage"].to_numpy()[clean])
    assert auroc >= 0.9, auroc


def test_annotation_matches_planted_cell_types(demo_run: Path) -> None:
    cells = pd.read_csv(demo_run / "results/annotate/cell_types.tsv.gz", sep="\t",
                        index_col="cell")
    truth = truth_table(demo_run).loc[cells.index]
    clean = ~truth["doublet"].to_numpy()
    called, planted = cells["cell_type"][clean], truth["cell_type"][clean]
    assert (called == planted).mean() >= 0.9
    for cell_type in MYELOID:
        mask = planted == cell_type
        assert (called[mask] == cell_type).mean() >= 0.85, cell_type


def test_outputs_complete_and_second_run_has_nothing_to_do(demo_run: Path) -> None:
    for rel in ("results/qc/qc_summary.tsv", "results/cluster/markers.tsv",
                "results/summary/mean_scores.tsv", "results/plots/umap_overview.png"):
        assert (demo_run / rel).stat().st_size > 0, rel
    dry = run_snakemake(demo_run, "-n", "--cores", "2")
    assert "Nothing to be done" in dry.stdout + dry.stderr


def _digest_tables(run: Path) -> dict[str, str]:
    """Hashes of every table, and of the final obs/embeddings (h5ad bytes carry no meaning)."""
    digests = {}
    for path in sorted((run / "results").rglob("*")):
        if path.suffix in {".tsv", ".gz", ".parquet"} and path.is_file():
            content = (pd.read_parquet(path).to_csv() if path.suffix == ".parquet"
                       else path.read_bytes())
            digests[str(path.relative_to(run))] = hashlib.sha256(
                content if isinstance(content, bytes) else content.encode()).hexdigest()
    final = ad.read_h5ad(run / "results/annotate/annotated.h5ad")
    digests["obs"] = hashlib.sha256(final.obs.to_csv().encode()).hexdigest()
    digests["umap"] = hashlib.sha256(np.ascontiguousarray(final.obsm["X_umap"])).hexdigest()
    return digests


@pytest.mark.slow
def test_rerun_gives_identical_outputs(demo_run: Path, tmp_path: Path) -> None:
    second = make_workdir(tmp_path / "second")
    run_snakemake(second, "--cores", "2")
    assert _digest_tables(second) == _digest_tables(demo_run)
