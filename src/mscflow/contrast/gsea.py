"""GSEA: gseapy prerank of the pseudobulk Wald statistic, and its running enrichment.

The gene sets are the run's scored programme sets (``GeneSetLibrary.programme_lists()``
of ``results/genesets/library.json``), so the sets tested are exactly the sets scored.
BH FDR per contrast over cell types x gene sets on the permutation p-values; gseapy's own
FDR is kept as ``fdr_gsea`` (it is unstable with the small curated libraries used here).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from mscflow.contrast.settings import ContrastSettings
from mscflow.contrast.stats import STATUS_SKIPPED, STATUS_TESTED, bh_adjust
from mscflow.errors import ConfigError

__all__ = ["gsea_prerank", "gsea_sets_for_plot", "ranking_from_de", "running_enrichment"]

_GSEA_COLUMNS = [
    "contrast", "tissue", "condition", "reference", "cell_type", "gene_set", "set_size",
    "matched_size", "es", "nes", "pvalue", "fdr", "fdr_gsea", "fwer", "leading_edge",
    "n_leading_edge", "significant", "status", "note",
]


def _match_genes(genes: Iterable[str], universe: pd.Index) -> list[str]:
    """Members of ``genes`` found in ``universe``, matching case-insensitively, in order."""
    lookup: dict[str, str] = {}
    for g in universe:
        lookup.setdefault(str(g).upper(), str(g))
    hits = [lookup.get(str(g).upper()) for g in genes]
    return list(dict.fromkeys(h for h in hits if h is not None))


def ranking_from_de(de: pd.DataFrame, by: str = "stat") -> pd.Series:
    """Descending, tie-broken (by gene name) ranking of genes from one DE table."""
    r = de[["gene", by]].dropna()
    r = r[r["gene"] != ""].sort_values([by, "gene"], ascending=[False, True], kind="mergesort")
    return pd.Series(r[by].to_numpy(float), index=pd.Index(r["gene"].astype(str), name="gene"))


def gsea_prerank(
    de: pd.DataFrame,
    gene_sets: Mapping[str, Sequence[str]],
    settings: ContrastSettings,
    threads: int = 1,
) -> pd.DataFrame:
    """gseapy prerank per contrast x cell type on the pydeseq2 Wald statistic.

    ``gene_sets`` maps set names to gene lists (``GeneSetLibrary.programme_lists()``);
    ``contrast_settings.gsea.sets`` picks some of them. Positive NES = set shifted up in
    ``condition`` vs ``reference``. Sets with too few or too many matched genes, and cell
    types without a DE test, give rows with a status.
    """
    sets = {str(name): [str(g) for g in genes] for name, genes in gene_sets.items()}
    if settings.gsea.sets is not None:
        unknown = [s for s in settings.gsea.sets if s not in sets]
        if unknown:
            raise ConfigError(
                f"contrast_settings.gsea.sets: {unknown} are not scored programme sets of "
                f"this run (scored: {sorted(sets)[:20]}...); fix the names, or add the sets "
                "to scoring.sets"
            )
        sets = {s: sets[s] for s in settings.gsea.sets}
    if not sets:
        raise ConfigError("GSEA: the run's gene-set library has no programme sets; check the "
                          "GMT file(s) and scoring.sets")
    rows: list[dict] = []
    keys = ["contrast", "tissue", "condition", "reference", "cell_type"]
    for key, sub in de.groupby(keys, sort=False):
        base = dict(zip(keys, key, strict=True))
        status = sub["status"].iloc[0]
        if status != STATUS_TESTED:
            for s in sorted(sets):
                rows.append({**base, "gene_set": s, "set_size": len(sets[s]),
                             "status": status, "note": f"no DE test: {sub['note'].iloc[0]}"})
            continue
        rows.extend(_gsea_one(base, ranking_from_de(sub), sets, settings, threads))
    out = pd.DataFrame(rows).reindex(columns=_GSEA_COLUMNS)
    for _, idx in out.groupby("contrast", sort=False).groups.items():
        out.loc[idx, "fdr"] = bh_adjust(out.loc[idx, "pvalue"].to_numpy(float))
    out["significant"] = (out["fdr"] < settings.fdr).fillna(False).astype(bool)
    return out


def _gsea_one(
    base: dict, ranking: pd.Series, sets: dict[str, list[str]], settings: ContrastSettings,
    threads: int,
) -> list[dict]:
    """Run prerank for one ranking; one row per gene set."""
    import gseapy

    g = settings.gsea
    matched = {s: _match_genes(genes, ranking.index) for s, genes in sets.items()}
    ok = {s: m for s, m in matched.items()
          if g.min_size <= len(m) <= g.max_size and len(m) < len(ranking)}
    rows = []
    for s in sorted(sets):
        if s not in ok:
            rows.append({**base, "gene_set": s, "set_size": len(sets[s]),
                         "matched_size": len(matched[s]), "status": STATUS_SKIPPED,
                         "note": f"{len(matched[s])} genes of the set in the ranking "
                                 f"(allowed {g.min_size}..{g.max_size})"})
    if not ok:
        return rows
    gp_logger = logging.getLogger("gseapy")
    prev = gp_logger.level
    gp_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pre = gseapy.prerank(
                rnk=ranking, gene_sets=ok, outdir=None, min_size=g.min_size,
                max_size=g.max_size, permutation_num=g.permutations, weight=g.weight,
                ascending=None, threads=max(1, int(threads)), no_plot=True, seed=g.seed,
                verbose=False,
            )
    finally:
        gp_logger.setLevel(prev)
    res = pre.res2d.set_index("Term")
    for s in sorted(ok):
        r = res.loc[s]
        lead = [x for x in str(r["Lead_genes"]).split(";") if x]
        rows.append({**base, "gene_set": s, "set_size": len(sets[s]),
                     "matched_size": len(ok[s]), "es": float(r["ES"]), "nes": float(r["NES"]),
                     "pvalue": max(float(r["NOM p-val"]), 1.0 / (g.permutations + 1)),
                     "fdr_gsea": float(r["FDR q-val"]),
                     "fwer": float(r["FWER p-val"]), "leading_edge": ";".join(lead),
                     "n_leading_edge": len(lead), "status": STATUS_TESTED, "note": ""})
    rows.sort(key=lambda x: x["gene_set"])
    return rows


def running_enrichment(ranking: pd.Series, genes: Iterable[str], weight: float = 1.0
                       ) -> pd.DataFrame:
    """Running GSEA enrichment score along a descending ``ranking`` for ``genes``.

    Returns columns ``rank``, ``gene``, ``value``, ``hit`` and ``running_es``
    (Subramanian 2005).
    """
    members = set(_match_genes(genes, ranking.index))
    hit = ranking.index.isin(list(members))
    if hit.sum() == 0 or hit.all():
        raise ValueError("running_enrichment: the set must match some but not all genes")
    w = np.abs(ranking.to_numpy(float)) ** weight
    up = np.where(hit, w, 0.0)
    up = up / up.sum() if up.sum() > 0 else hit / hit.sum()
    down = np.where(hit, 0.0, 1.0 / (~hit).sum())
    return pd.DataFrame({"rank": np.arange(len(ranking)), "gene": ranking.index,
                         "value": ranking.to_numpy(float), "hit": hit,
                         "running_es": np.cumsum(up - down)})


def gsea_sets_for_plot(gsea: pd.DataFrame, patterns: Sequence[str]) -> list[str]:
    """Gene sets of ``gsea`` to draw: each entry of ``patterns`` is an exact set name or,
    if no set has that name, a case-insensitive substring. Order follows ``patterns``."""
    names = sorted(gsea["gene_set"].dropna().unique())
    out: list[str] = []
    for p in patterns:
        hits = [p] if p in names else [n for n in names if p.lower() in n.lower()]
        out.extend(h for h in hits if h not in out)
    return out
