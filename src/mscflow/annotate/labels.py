"""The authors' cell-type labels beside mscflow's: a cross table and a heat map; and the
cross-check of two annotation sources (marker labels against published or reference
labels): agreement per label, the clusters where they disagree, and a heat map.

A sample sheet's ``keep_obs`` carries obs columns of a published file into the merged data
as ``published_<column>``. Those whose name says they hold labels (``cell_type``,
``author_cell_type``, ``celltype``, ``cell_ontology_class``, ``free_annotation``,
``*label*``, ``*cluster*``; not ``*_id`` columns) are compared with mscflow's
``cell_type``: how many cells of each published label got each mscflow label, and which
share of the published label that is (row fraction).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path

import h5py
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from anndata.io import read_elem

from mscflow.errors import InputDataError
from mscflow.inputs.readers import PUBLISHED_PREFIX, parse_keep_obs, published_name
from mscflow.plotting import set_style
from mscflow.vocab import UNASSIGNED

log = logging.getLogger(__name__)

LABEL_NAME = re.compile(r"cell.?type|cell_ontology_class|annotation|label|cluster",
                        re.IGNORECASE)
MISSING = "(no label)"
TABLE_COLUMNS = ["published_label", "cell_type", "n_cells", "row_fraction"]


def is_label_column(name: str) -> bool:
    """Whether an obs column's name says it holds cell labels (ids excluded)."""
    return bool(LABEL_NAME.search(name)) and not re.search(r"_id$", name, re.IGNORECASE)


def author_label_columns(keep_obs: Iterable[str]) -> list[str]:
    """The carried label columns (``published_<column>``) of the sheet's ``keep_obs``
    values, in sheet order, each once."""
    columns = dict.fromkeys(c for text in keep_obs for c in parse_keep_obs(text))
    return [published_name(c) for c in columns if is_label_column(c)]


def label_crosstab(obs: pd.DataFrame, published: str, label: str = "cell_type"
                   ) -> pd.DataFrame:
    """Cells per (published label, mscflow label) with the row fraction (share of the
    published label's cells). Cells of samples without the column count as ``(no label)``.
    Rows in order of published-label size, then of count."""
    if published not in obs:
        raise InputDataError(f"obs has no column {published!r}; keep_obs must name "
                       f"'{published.removeprefix(PUBLISHED_PREFIX)}'")
    pairs = pd.DataFrame({
        "published_label": obs[published].astype(object).where(obs[published].notna(),
                                                                MISSING).astype(str),
        "cell_type": obs[label].astype(str),
    })
    table = pairs.value_counts().rename("n_cells").reset_index()
    totals = table.groupby("published_label")["n_cells"].transform("sum")
    table["row_fraction"] = (table["n_cells"] / totals).round(4)
    order = table.groupby("published_label")["n_cells"].sum().sort_values(
        ascending=False, kind="stable")
    table["_rank"] = table["published_label"].map({k: i for i, k in enumerate(order.index)})
    table = table.sort_values(["_rank", "n_cells", "cell_type"],
                              ascending=[True, False, True], kind="stable")
    return table.drop(columns="_rank").reset_index(drop=True)[TABLE_COLUMNS]


def crosstab_heatmap(table: pd.DataFrame, published: str, *, title: str | None = None,
                     row_name: str | None = None, column_name: str = "mscflow cell_type"
                     ) -> plt.Figure:
    """Heat map of the row fractions (published label x mscflow label), each cell
    annotated with its count of cells. ``title``, ``row_name`` and ``column_name`` replace
    the published-label wording (for two annotation sources)."""

    set_style()
    rows = list(dict.fromkeys(table["published_label"]))
    # columns in the order of the rows' best matches (a diagonal where labels agree)
    best = list(dict.fromkeys(table.drop_duplicates("published_label")["cell_type"]))
    rest = sorted(set(table["cell_type"]) - set(best))
    cols = sorted(best, key=lambda c: c == UNASSIGNED) + rest
    fractions = table.pivot(index="published_label", columns="cell_type",
                            values="row_fraction").reindex(index=rows, columns=cols).fillna(0)
    counts = table.pivot(index="published_label", columns="cell_type",
                         values="n_cells").reindex(index=rows, columns=cols).fillna(0)
    numbers = counts.astype(int).astype(str).where(counts > 0, "")
    fig, ax = plt.subplots(figsize=(0.55 * len(cols) + 4.5, 0.42 * len(rows) + 2.8))
    sns.heatmap(fractions, cmap="Blues", vmin=0, vmax=1, ax=ax, linewidths=0.4,
                linecolor="white", annot=numbers, fmt="", annot_kws={"fontsize": 8},
                cbar_kws={"label": f"share of the {row_name or 'published label'}'s cells",
                          "shrink": 0.6})
    name = published.removeprefix(PUBLISHED_PREFIX)
    ax.set_title(title or f"Published '{name}' vs mscflow cell_type (numbers: cells)")
    ax.set_xlabel(column_name)
    ax.set_ylabel(row_name or f"published {name}")
    for label in ax.get_xticklabels():
        label.set_rotation(60)
        label.set_horizontalalignment("right")
    return fig


def read_obs(path: str | Path) -> pd.DataFrame:
    """The obs table of an h5ad file, without reading its matrices or graphs."""
    with h5py.File(path, "r") as handle:
        return read_elem(handle["obs"])


def compare_labels(obs: pd.DataFrame, published: str) -> tuple[pd.DataFrame, plt.Figure]:
    """The labels stage: cross table of a published label column with mscflow's
    ``cell_type`` and its heat map; logs how many published labels map mostly to one
    mscflow label."""
    table = label_crosstab(obs, published)
    best = table.sort_values("row_fraction", ascending=False).drop_duplicates(
        "published_label")
    for row in best.itertuples():
        log.info("published %r: %.0f%% of its cells -> %s", row.published_label,
                 100 * row.row_fraction, row.cell_type)
    return table, crosstab_heatmap(table, published)


# ------------------------------------------------------------ two annotation sources
SOURCE_NAMES = {"markers": "cell_type_markers", "published": "cell_type_published",
                "reference": "cell_type_reference"}
AGREEMENT_COLUMNS = ["label", "n_cells_markers", "n_cells_other", "n_cells_both", "agreement"]
CLUSTER_CHECK_COLUMNS = ["cluster", "tissue", "n_cells", "markers_label", "other_label",
                         "other_share", "share_agreeing", "agrees"]


def available_sources(source: str, published_column: str | None) -> list[str]:
    """The label sources a run has besides the markers: published when
    ``annotation.published_column`` is set, reference when it is the source."""
    out = ["published"] if published_column else []
    return out + (["reference"] if source == "reference" else [])


def agreement_per_label(obs: pd.DataFrame, other: str) -> pd.DataFrame:
    """Per label either source gives: cells with it from the markers, from ``other``,
    from both, and the agreement (cells with it from both / cells with it from either);
    first row ``(all cells)``: cells labelled alike / all cells."""
    a = obs[SOURCE_NAMES["markers"]].astype(str)
    b = obs[SOURCE_NAMES[other]].astype(str)
    same = a == b
    rows = [{"label": "(all cells)", "n_cells_markers": len(a), "n_cells_other": len(b),
             "n_cells_both": int(same.sum()),
             "agreement": round(float(same.mean()) if len(a) else 0.0, 4)}]
    for label in sorted(set(a) | set(b), key=lambda v: (-(a == v).sum() - (b == v).sum(), v)):
        both = int(((a == label) & (b == label)).sum())
        either = int(((a == label) | (b == label)).sum())
        rows.append({"label": label, "n_cells_markers": int((a == label).sum()),
                     "n_cells_other": int((b == label).sum()), "n_cells_both": both,
                     "agreement": round(both / either, 4)})
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)


def cluster_agreement(obs: pd.DataFrame, other: str, cluster_key: str) -> pd.DataFrame:
    """Per cluster (and tissue): its marker label, the label most of its cells have from
    ``other`` (with that share), the share of its cells labelled alike, and whether the two
    cluster labels agree. Disagreeing clusters first, larger first."""
    tissue = obs["tissue"].astype(str) if "tissue" in obs else pd.Series("", index=obs.index)
    frame = pd.DataFrame({"cluster": obs[cluster_key].astype(str), "tissue": tissue,
                          "a": obs[SOURCE_NAMES["markers"]].astype(str),
                          "b": obs[SOURCE_NAMES[other]].astype(str)})
    rows = []
    for (cluster, tis), part in frame.groupby(["cluster", "tissue"], sort=True):
        a_label = part["a"].value_counts().index[0]
        counts = part["b"].value_counts()
        rows.append({"cluster": cluster, "tissue": tis, "n_cells": len(part),
                     "markers_label": a_label, "other_label": counts.index[0],
                     "other_share": round(counts.iloc[0] / len(part), 4),
                     "share_agreeing": round(float((part["a"] == part["b"]).mean()), 4),
                     "agrees": a_label == counts.index[0]})
    table = pd.DataFrame(rows, columns=CLUSTER_CHECK_COLUMNS)
    return table.sort_values(["agrees", "n_cells"], ascending=[True, False],
                             kind="stable").reset_index(drop=True)


def crosscheck_sources(obs: pd.DataFrame, other: str, cluster_key: str
                       ) -> tuple[pd.DataFrame, pd.DataFrame, plt.Figure]:
    """The cross-check of the marker labels with ``other`` (published or reference):
    agreement per label, per cluster, and the heat map (``other`` label x marker label);
    logs the overall agreement and names the disagreeing clusters."""
    for source in ("markers", other):
        if SOURCE_NAMES[source] not in obs:
            raise InputDataError(f"obs has no column {SOURCE_NAMES[source]!r}: annotate with "
                                 f"the {source} labels first")
    per_label = agreement_per_label(obs, other)
    clusters = cluster_agreement(obs, other, cluster_key)
    log.info("markers vs %s: %.1f%% of cells labelled alike", other,
             100 * per_label["agreement"].iloc[0])
    for row in clusters[~clusters["agrees"]].itertuples():
        log.info("cluster %s%s (%d cells): markers say %s, %s says %s (%.0f%% of its cells)",
                 row.cluster, f" in {row.tissue}" if row.tissue else "", row.n_cells,
                 row.markers_label, other, row.other_label, 100 * row.other_share)
    table = label_crosstab(obs, SOURCE_NAMES[other], SOURCE_NAMES["markers"])
    figure = crosstab_heatmap(table, SOURCE_NAMES[other],
                              title=f"{other} labels vs marker labels (numbers: cells)",
                              row_name=f"{other} label", column_name="marker label")
    return per_label, clusters, figure
