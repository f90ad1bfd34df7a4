"""Agreement of mscflow's cell types with the authors' labels, per annotation source, on the
real Tabula Muris lung channel and restricted panels of it (issue 31).

Data sets (the same 622 cells, labels from tests/data/public/tm_lung_cellxgene.h5ad
``cell_type``, mapped onto mscflow's names by resources/annotation/published_cell_types.tsv):
  full      the 10x channel, every gene detected in >= 3 cells
  panel5000 its 5,000 most often detected genes (the b_cell and t_cell sets are dropped)
  hvg2000   the channel's 2,000 highly variable genes (tests/data/public/tm_lung_hvg2000.h5ad)
Each is normalised, clustered (Leiden 1.0, seed 0) and annotated from the curated marker
sets with the floor off (``min_markers_expressed`` 0: the labels before issue 31) and on
(the schema default). The reference source trains a celltypist model on donors D1+D2 and
predicts D3+D4 (per cell, and majority vote over Leiden clusters of D3+D4). The published
source is the mapped labels themselves (agreement 1 by construction).

    python benchmarks/annotation_agreement.py            # ~2 min on one core
"""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc

from mscflow import genesets as gs
from mscflow.annotate import core as an
from mscflow.annotate import reference as rf
from mscflow.annotate.published import map_published_labels, read_name_table
from mscflow.config import section_schema
from mscflow.vocab import UNASSIGNED

REPO = Path(__file__).resolve().parents[1]
CHANNEL = REPO / "tests/data/tabula-muris-lung-10X_P7_8"
PUBLIC = REPO / "tests/data/public"
GENESETS = REPO / "resources/genesets"
NAMES = REPO / "resources/annotation/published_cell_types.tsv"


def cluster(adata: ad.AnnData) -> ad.AnnData:
    """Normalise, log, PCA on 2,000 HVGs, neighbours and Leiden 1.0 (the tests' recipe)."""
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.highly_variable_genes(adata, n_top_genes=min(2000, adata.n_vars - 1))
    sc.pp.pca(adata, n_comps=30, random_state=0, mask_var="highly_variable")
    sc.pp.neighbors(adata, n_neighbors=15, random_state=0)
    sc.tl.leiden(adata, resolution=1.0, random_state=0, key_added="leiden_1.0",
                 flavor="igraph", n_iterations=2, directed=False)
    adata.obs["tissue"] = "lung"
    return adata


def datasets() -> dict[str, ad.AnnData]:
    """Counts of the channel's cells (zsGreen left out), full and on two panels."""
    full = sc.read_10x_mtx(CHANNEL)
    full = full[:, full.var_names != "zsGreen_transgene"].copy()
    sc.pp.filter_cells(full, min_genes=200)
    sc.pp.filter_genes(full, min_cells=3)
    detected = np.asarray((full.X > 0).sum(axis=0)).ravel()
    panel = full[:, np.sort(np.argsort(-detected, kind="stable")[:5000])].copy()
    hvg = ad.read_h5ad(PUBLIC / "tm_lung_hvg2000.h5ad")
    hvg = ad.AnnData(hvg.layers["counts"], obs=hvg.obs[[]], var=hvg.var[[]])
    hvg = hvg[hvg.obs_names.isin(full.obs_names), hvg.var_names != "zsGreen_transgene"].copy()
    return {"full": full, "panel5000": panel, "hvg2000": hvg}


def agreement(labels: pd.Series, truth: pd.Series) -> dict[str, float]:
    assigned = labels != UNASSIGNED
    return {"agreement": round(float((labels == truth).mean()), 4),
            "unassigned": round(float((~assigned).mean()), 4),
            "agreement_assigned": round(float((labels[assigned] == truth[assigned]).mean()), 4)}


def marker_rows(name: str, adata: ad.AnnData, truth: pd.Series) -> list[dict]:
    markers = gs.read_gmt(GENESETS / "celltype_markers_mouse.gmt")
    synonyms = gs.read_synonyms(GENESETS / "symbol_synonyms.tsv")
    matched, _ = gs.match_gene_sets(markers, adata.var_names, set_species="mouse",
                                    data_species="mouse", min_genes=3, on_too_few="drop",
                                    synonyms=synonyms)
    dropped = sorted(set(markers) - set(matched))
    default = section_schema("annotation")["properties"]["min_markers_expressed"]["default"]
    rows = []
    for label, floor in (("markers, before (no floor)", 0.0),
                         (f"markers, after (floor {default})", default)):
        _, per_cluster = an.annotate(adata.copy(), matched, min_markers_expressed=floor)
        cells = adata.obs["leiden_1.0"].astype(str).map(per_cluster.set_index("cluster")["label"])
        rows.append({"data": name, "source": label, "n_cells": adata.n_obs,
                     "dropped_sets": ",".join(dropped) or "-", **agreement(cells, truth)})
    return rows


def reference_rows(name: str, counts: ad.AnnData, truth: pd.Series) -> list[dict]:
    donors = ad.read_h5ad(PUBLIC / "tm_lung_cellxgene.h5ad", backed="r").obs["donor_id"]
    donor = donors.reindex(counts.obs_names).astype(str)
    train = counts[donor.isin(["D1", "D2"]).to_numpy()].copy()
    train.obs["label"] = truth.loc[train.obs_names].to_numpy()
    test = cluster(counts[donor.isin(["D3", "D4"]).to_numpy()].copy())
    model = rf.train_reference_model(train, "label", seed=0)
    pred = rf.predict_reference(test, model, test.obs["leiden_1.0"])
    held = truth.loc[test.obs_names]
    return [{"data": name, "source": f"reference ({how})", "n_cells": test.n_obs,
             "dropped_sets": "-", **agreement(pred[col], held)}
            for how, col in (("per cell; trained on D1+D2, tested on D3+D4",
                              "cell_type_reference_cell"),
                             ("majority vote over clusters", "cell_type_reference"))]


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("mscflow").setLevel(logging.WARNING)
    fixture = ad.read_h5ad(PUBLIC / "tm_lung_cellxgene.h5ad", backed="r").obs
    names = read_name_table(NAMES)
    rows = []
    for name, counts in datasets().items():
        truth = map_published_labels(fixture["cell_type"].reindex(counts.obs_names), names)
        rows += marker_rows(name, cluster(counts.copy()), truth)
        rows.append({"data": name, "source": "published (the labels themselves)",
                     "n_cells": counts.n_obs, "dropped_sets": "-",
                     **agreement(truth, truth)})
        rows += reference_rows(name, counts, truth)
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
