"""Fast Scrublet against scanpy's scrublet on planted demo doublets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scanpy as sc

from mscflow.demo import DemoSpec, generate_demo
from mscflow.doublets import hvg_mask, scrublet_fast
from mscflow.genesets import read_gmt
from mscflow.io import prefix_barcodes, read_sample
from mscflow.qc import QCSettings, add_qc_metrics, flag_outliers

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_samples(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[sc.AnnData, np.ndarray]]:
    """Two lung samples of 2,500 cells (QC-passing cells, planted doublet flags)."""
    out = tmp_path_factory.mktemp("doublet_demo")
    spec = DemoSpec(cells_per_sample=2500, replicates=1, tissues=("lung",), seed=3)
    sheet = generate_demo(out, read_gmt(REPO / "resources/genesets/programmes_mouse.gmt"),
                          read_gmt(REPO / "resources/genesets/celltype_markers_mouse.gmt"), spec)
    truth = pd.read_csv(out / "truth.tsv.gz", sep="\t")
    truth.index = truth["sample"] + ":" + truth["barcode"]
    samples = []
    for row in sheet.itertuples():
        adata = read_sample(row.path, row.format, sample=row.sample, layer=row.layer or None)
        prefix_barcodes(adata, row.sample)
        add_qc_metrics(adata, "mouse")
        flag_outliers(adata, QCSettings.from_config({}))
        adata = adata[~adata.obs["qc_fail"].to_numpy()].copy()
        samples.append((adata, truth.loc[adata.obs_names, "doublet"].to_numpy(bool)))
    return samples


def precision_recall(called: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Precision and recall of doublet calls."""
    hits = int((called & truth).sum())
    return hits / max(int(called.sum()), 1), hits / max(int(truth.sum()), 1)


@pytest.mark.slow
def test_fast_scrublet_matches_scanpy_on_planted_doublets(demo_samples) -> None:
    fast_calls, ref_calls, truths = [], [], []
    for adata, truth in demo_samples:
        result = scrublet_fast(adata.X, expected_rate=0.05, random_state=0)
        ref = adata.copy()
        sc.pp.scrublet(ref, expected_doublet_rate=0.05, random_state=0, verbose=False)
        assert np.corrcoef(result.scores, ref.obs["doublet_score"])[0, 1] > 0.95
        fast_calls.append(result.predicted)
        ref_calls.append(ref.obs["predicted_doublet"].to_numpy(bool))
        truths.append(truth)
    truth = np.concatenate(truths)
    p_fast, r_fast = precision_recall(np.concatenate(fast_calls), truth)
    p_ref, r_ref = precision_recall(np.concatenate(ref_calls), truth)
    assert p_fast >= p_ref - 0.02
    assert r_fast >= r_ref - 0.02
    assert p_fast >= 0.9 and r_fast >= 0.75


def test_fast_scrublet_is_deterministic(demo_samples) -> None:
    adata, _ = demo_samples[0]
    first = scrublet_fast(adata.X, random_state=1)
    second = scrublet_fast(adata.X, random_state=1)
    np.testing.assert_array_equal(first.scores, second.scores)
    np.testing.assert_array_equal(first.predicted, second.predicted)
    assert first.scores.shape == (adata.n_obs,)
    assert np.isfinite(first.threshold)


def test_hvg_mask_matches_scanpy_seurat(demo_samples) -> None:
    adata, _ = demo_samples[0]
    ref = adata.copy()
    sc.pp.normalize_total(ref)
    sc.pp.log1p(ref)
    sc.pp.highly_variable_genes(ref)
    np.testing.assert_array_equal(hvg_mask(adata.X.tocsr()), ref.var["highly_variable"])
