"""Planted doublets on real expression profiles: the truth the doublet benchmark and tests
score doublet callers against.

Templates come from a real count matrix (e.g. the Tabula Muris lung channel): its cells are
clustered, and each template cell keeps its own library size and a profile smoothed over its
nearest neighbours of the same cluster (within-type states stay, sampling noise goes).
Simulated singlets are negative-binomial draws around a random template's profile. A
doublet sums two such draws, each at ``gain / 2`` of its template's library, so its library
is ``gain`` times that of an average singlet of the pair (1.2-2.0 in 10x data, as capture
of the two cells' mRNA is incomplete). Pairs are drawn by abundance and labelled:

* ``heterotypic_distinct``: two clusters whose mean profiles correlate below
  ``distinct_below`` (e.g. macrophage + endothelial cell),
* ``heterotypic_similar``: two clusters correlating at or above ``similar_above`` (e.g. two
  endothelial or two monocyte subsets),
* ``homotypic``: two cells of the same cluster,
* pairs in between are ``heterotypic_distinct`` in a ``mixed`` sample (drawn at random).
"""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
from scipy import sparse

DOUBLET_KINDS = ("heterotypic_distinct", "heterotypic_similar", "homotypic")


@dataclass(frozen=True)
class Templates:
    """Real cells to simulate from: smoothed profiles (rows sum to 1), libraries, clusters,
    and the correlation of cluster mean profiles."""

    profiles: np.ndarray
    libraries: np.ndarray
    clusters: np.ndarray
    genes: pd.Index
    cluster_corr: pd.DataFrame


def real_templates(counts: ad.AnnData, *, resolution: float = 1.0, min_cluster_cells: int = 10,
                   n_smooth: int = 8, seed: int = 0) -> Templates:
    """Templates from raw counts (cells x genes; low-quality cells already removed).

    Clusters: Leiden on a 10-neighbour graph of 30 PCs of 2,000 HVGs; clusters smaller
    than ``min_cluster_cells`` are left out. Each cell's profile is the mean normalised
    expression of itself and its ``n_smooth`` nearest cells of its cluster.
    """
    detected = np.asarray((counts.X > 0).sum(axis=0)).ravel() >= 3
    adata = counts[:, detected].copy()
    sc.pp.normalize_total(adata, target_sum=1.0)
    norm = sparse.csr_matrix(adata.X, dtype=np.float64)
    sc.pp.log1p(adata)
    sc.pp.highly_variable_genes(adata, n_top_genes=2000)
    sc.pp.pca(adata, n_comps=30, mask_var="highly_variable", random_state=seed)
    sc.pp.neighbors(adata, n_neighbors=10, random_state=seed)
    sc.tl.leiden(adata, resolution=resolution, flavor="igraph", n_iterations=2,
                 random_state=seed)
    labels = adata.obs["leiden"].astype(str).to_numpy()
    sizes = pd.Series(labels).value_counts()
    keep = np.isin(labels, sizes.index[sizes >= min_cluster_cells])
    pcs = adata.obsm["X_pca"]
    profiles = np.zeros((int(keep.sum()), adata.n_vars))
    kept_idx = np.flatnonzero(keep)
    for row, i in enumerate(kept_idx):
        same = np.flatnonzero(labels == labels[i])
        dist = ((pcs[same] - pcs[i]) ** 2).sum(axis=1)
        nearest = same[np.argsort(dist)[: n_smooth + 1]]
        profiles[row] = np.asarray(norm[nearest].mean(axis=0)).ravel()
    profiles /= profiles.sum(axis=1, keepdims=True)
    clusters = labels[keep]
    hvg = adata.var["highly_variable"].to_numpy()
    log_means = pd.DataFrame({c: np.log1p(1e4 * profiles[clusters == c][:, hvg].mean(axis=0))
                              for c in sorted(set(clusters), key=str)})
    libraries = np.asarray(counts.X[keep].sum(axis=1)).ravel().astype(np.float64)
    return Templates(profiles, libraries, clusters, adata.var_names, log_means.corr())


def pair_kinds(templates: Templates, *, distinct_below: float = 0.5,
               similar_above: float = 0.7) -> pd.DataFrame:
    """Every ordered cluster pair with its kind and its weight (product of abundances)."""
    share = pd.Series(templates.clusters).value_counts(normalize=True)
    rows = []
    for a in share.index:
        for b in share.index:
            corr = float(templates.cluster_corr.loc[a, b])
            if a == b:
                kind = "homotypic"
            elif corr >= similar_above:
                kind = "heterotypic_similar"
            elif corr < distinct_below:
                kind = "heterotypic_distinct"
            else:
                kind = "heterotypic_intermediate"
            rows.append({"first": a, "second": b, "kind": kind, "corr": corr,
                         "weight": share[a] * share[b]})
    return pd.DataFrame(rows)


def _draw(templates: Templates, idx: np.ndarray, scale: np.ndarray, dispersion: float,
          rng: np.random.Generator, chunk: int = 500) -> sparse.csr_matrix:
    """Negative-binomial counts around the templates' profiles at scaled libraries."""
    lib = templates.libraries[idx] * scale * np.exp(rng.normal(0.0, 0.15, len(idx)))
    shape = 1.0 / dispersion
    blocks = []
    for start in range(0, len(idx), chunk):
        mu = templates.profiles[idx[start:start + chunk]] * lib[start:start + chunk, None]
        blocks.append(sparse.csr_matrix(rng.poisson(rng.gamma(shape, mu / shape)),
                                        dtype=np.float32))
    return sparse.vstack(blocks, format="csr") if blocks else sparse.csr_matrix(
        (0, templates.profiles.shape[1]), dtype=np.float32)


def simulate_sample(templates: Templates, *, n_cells: int, doublet_rate: float, gain: float,
                    kind: str = "mixed", dispersion: float = 0.1, seed: int = 0,
                    distinct_below: float = 0.5, similar_above: float = 0.7
                    ) -> tuple[ad.AnnData, pd.DataFrame]:
    """A sample of ``n_cells`` (raw counts) with ``doublet_rate`` planted doublets.

    ``kind`` is one of :data:`DOUBLET_KINDS` (every doublet of that kind) or ``mixed``
    (pairs of any two cells by abundance, labelled by the clusters' similarity).
    ``gain`` is the doublet's library relative to an average singlet of its pair (each
    doublet draws its own within +/- 0.1). Returns the counts and the truth per cell:
    ``cluster``, ``doublet``, ``doublet_kind``, ``doublet_partner`` (cluster of the second
    cell), ``doublet_gain``.
    """
    if kind not in (*DOUBLET_KINDS, "mixed"):
        raise ValueError(f"kind must be one of {DOUBLET_KINDS} or 'mixed', not {kind!r}")
    rng = np.random.default_rng(seed)
    n_dbl = int(round(doublet_rate * n_cells))
    n_single = n_cells - n_dbl
    singles = rng.integers(0, len(templates.clusters), n_single)
    pairs = pair_kinds(templates, distinct_below=distinct_below, similar_above=similar_above)
    if kind != "mixed":
        pairs = pairs[pairs["kind"] == kind]
    else:
        pairs = pairs.assign(kind=pairs["kind"].replace("heterotypic_intermediate",
                                                        "heterotypic_distinct"))
    chosen = pairs.iloc[rng.choice(len(pairs), n_dbl, p=pairs["weight"] / pairs["weight"].sum())]
    members = {c: np.flatnonzero(templates.clusters == c) for c in set(templates.clusters)}
    first = np.array([rng.choice(members[c]) for c in chosen["first"]], dtype=int)
    second = np.array([rng.choice(members[c]) for c in chosen["second"]], dtype=int)
    gains = np.clip(gain + rng.uniform(-0.1, 0.1, n_dbl), 1.0, 2.0)
    x_single = _draw(templates, singles, np.ones(n_single), dispersion, rng)
    x_dbl = (_draw(templates, first, gains / 2, dispersion, rng)
             + _draw(templates, second, gains / 2, dispersion, rng))
    order = rng.permutation(n_cells)
    x = sparse.vstack([x_single, x_dbl], format="csr")[order]
    truth = pd.DataFrame({
        "cluster": np.r_[templates.clusters[singles], templates.clusters[first]],
        "doublet": np.r_[np.zeros(n_single, bool), np.ones(n_dbl, bool)],
        "doublet_kind": np.r_[np.full(n_single, ""), chosen["kind"].to_numpy(str)],
        "doublet_partner": np.r_[np.full(n_single, ""), chosen["second"].to_numpy(str)],
        "doublet_gain": np.r_[np.full(n_single, np.nan), gains],
    }).iloc[order].reset_index(drop=True)
    truth.index = [f"cell{i:05d}" for i in range(n_cells)]
    adata = ad.AnnData(x, obs=pd.DataFrame(index=truth.index),
                       var=pd.DataFrame(index=templates.genes))
    return adata, truth
