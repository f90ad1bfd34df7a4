"""The real Tabula Muris lung channel through reading, QC and clustering."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import pandas as pd
import pytest
from helpers import TABULA_MURIS, make_workdir, run_snakemake

from mscflow.inputs.readers import read_sample


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


@pytest.mark.parametrize("method", ["scanpy", "zscore"])
def test_scatter_gather_scoring_and_annotation_equal_one_job(method: str, tmp_path: Path
                                                             ) -> None:
    """The channel as three interleaved samples of two tissues (plus one sample without
    cells): per-sample scoring and expression sums, gathered, give the single job's scores
    to the bit, the same labels and cluster table, and the same annotated h5ad."""
    import numpy as np
    import scanpy as sc

    from mscflow.annotate.core import (
        AnnotationSettings,
        GroupExpression,
        annotate_stage,
        sample_group_expression,
    )
    from mscflow.config import schema_defaults
    from mscflow.genesets import GeneSetSettings, library_stage
    from mscflow.io import write_h5ad_atomic, write_h5ad_with_obs
    from mscflow.scoring.core import (
        ScoringSettings,
        combine_sample_scores,
        gene_stats_for,
        score_library,
        score_sample,
    )

    adata = read_sample(TABULA_MURIS, "10x_mtx", sample="tm_lung")
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.pca(adata, n_comps=20, random_state=0)
    sc.pp.neighbors(adata, random_state=0)
    sc.tl.leiden(adata, random_state=0, flavor="igraph", n_iterations=2, directed=False,
                 key_added="leiden")
    samples = np.array(["s1", "s2", "s3"])[np.arange(adata.n_obs) % 3]
    adata.obs["sample"] = pd.Categorical(samples, categories=["s1", "s2", "s3", "empty"])
    adata.obs["tissue"] = np.where(samples == "s3", "liver", "lung")
    clustered = tmp_path / "clustered.h5ad"
    write_h5ad_atomic(adata, clustered)
    root = Path(__file__).resolve().parents[2]
    paths = ("programmes", "markers", "synonyms", "orthologs")
    library = library_stage(adata.var_names, GeneSetSettings.from_config({
        k: ({s: str(root / p) for s, p in v.items()} if isinstance(v, dict) else str(root / v))
        if k in paths else v for k, v in schema_defaults("genesets").items()}), species="mouse")
    settings = ScoringSettings.from_config({"method": method})
    # one job
    scores, markers = score_library(adata, library, settings, random_state=0)
    one = adata.copy()
    cells_one, clusters_one, dot_one = annotate_stage(
        one, library.marker_sets(), markers, scores, AnnotationSettings.from_config({}),
        cluster_key="leiden")
    write_h5ad_atomic(one, tmp_path / "one.h5ad")
    # scatter and gather
    stats = gene_stats_for(ad.read_h5ad(clustered, backed="r"), method)
    parts = {s: score_sample(clustered, s, library, settings, stats, random_state=0)
             for s in ["s1", "s2", "s3", "empty"]}
    assert len(parts["empty"][0]) == 0
    gathered = [combine_sample_scores([p[i] for p in parts.values()], adata.obs_names)
                for i in (0, 1)]
    pd.testing.assert_frame_equal(gathered[0], scores, check_names=False)
    pd.testing.assert_frame_equal(gathered[1], markers, check_names=False)
    expression = GroupExpression.combine(
        [sample_group_expression(clustered, s, "leiden") for s in ["s1", "s2", "s3", "empty"]])
    backed = ad.read_h5ad(clustered, backed="r")
    light = ad.AnnData(obs=backed.obs.copy(), var=pd.DataFrame(index=backed.var_names.copy()))
    backed.file.close()
    cells, clusters, dot = annotate_stage(
        light, library.marker_sets(), gathered[1], gathered[0],
        AnnotationSettings.from_config({}), cluster_key="leiden", expression=expression)
    pd.testing.assert_frame_equal(cells, cells_one)
    pd.testing.assert_frame_equal(clusters, clusters_one)
    assert clusters["tissue"].nunique() == 2 and clusters["top_marker_genes"].str.len().all()
    pd.testing.assert_frame_equal(dot, dot_one, check_exact=False, rtol=1e-12)
    write_h5ad_with_obs(clustered, light.obs, tmp_path / "gathered.h5ad")
    a, b = ad.read_h5ad(tmp_path / "gathered.h5ad"), ad.read_h5ad(tmp_path / "one.h5ad")
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var)
    assert (a.X != b.X).nnz == 0 and a.X.dtype == b.X.dtype
    assert a.obsm.keys() == b.obsm.keys() and a.obsp.keys() == b.obsp.keys()
    assert a.uns.keys() == b.uns.keys()
    with pytest.raises(ValueError, match="the new obs 3"):
        write_h5ad_with_obs(clustered, light.obs.iloc[:3], tmp_path / "bad.h5ad")
    assert not (tmp_path / "bad.h5ad").exists() and not list(tmp_path.glob(".bad*"))
