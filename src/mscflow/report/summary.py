"""Summary tables across samples."""

from __future__ import annotations

import pandas as pd


def score_columns(obs: pd.DataFrame) -> list[str]:
    """obs columns holding gene-set scores (``score_<set>``)."""
    return [c for c in obs.columns if c.startswith("score_")]


def mean_scores(obs: pd.DataFrame, cluster_key: str) -> pd.DataFrame:
    """Mean of every score per cluster, cell type and sample (long table)."""
    keys = [cluster_key, "cell_type", "sample", "tissue", "condition"]
    cols = score_columns(obs)
    table = obs[keys + cols].groupby(keys, observed=True)[cols].mean().reset_index()
    counts = obs.groupby(keys, observed=True).size().rename("n_cells").reset_index()
    table = table.merge(counts, on=keys)
    long = table.melt(id_vars=[*keys, "n_cells"], value_vars=cols, var_name="gene_set",
                      value_name="mean_score")
    long["gene_set"] = long["gene_set"].str.removeprefix("score_")
    return long.rename(columns={cluster_key: "cluster"})
