"""The real Tabula Muris lung channel through reading, QC and clustering."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import pandas as pd
import pytest
from conftest import TABULA_MURIS, make_workdir, run_snakemake

from mscflow.io import read_sample


def test_reads_as_10x_v3() -> None:
    adata = read_sample(TABULA_MURIS, "10x_mtx", sample="tm_lung")
    assert adata.shape == (625, 23433)
    assert adata.X.nnz == 1_272_416
    assert "zsGreen_transgene" in adata.var_names


@pytest.mark.workflow
def test_qc_flags_transgene_cell_and_clusters(tmp_path: Path) -> None:
    workdir = make_workdir(tmp_path / "tm", with_contrasts=False)
    sheet = pd.DataFrame([{
        "sample": "tm_lung_P7_8", "tissue": "lung", "condition": "untreated", "replicate": 1,
        "species": "mouse", "path": str(TABULA_MURIS), "format": "10x_mtx", "layer": "",
    }])
    sheet.to_csv(workdir / "config/samples.tsv", sep="\t", index=False)
    run_snakemake(workdir, "--cores", "2", "results/cluster/clustered.h5ad")
    metrics = pd.read_csv(workdir / "results/qc/tm_lung_P7_8_metrics.tsv.gz", sep="\t")
    transgene = metrics[metrics["top_feature"] == "zsGreen_transgene"]
    heavy = transgene[transgene["total_counts"] > 1_000_000]
    assert len(heavy) == 1
    assert heavy["qc_fail"].item() and heavy["qc_dominant_feature"].item()
    assert heavy["qc_high_counts"].item()
    clustered = ad.read_h5ad(workdir / "results/cluster/clustered.h5ad")
    assert heavy["cell"].item() not in clustered.obs_names
    assert clustered.n_obs > 500
    assert clustered.obs["leiden_1"].nunique() >= 5
