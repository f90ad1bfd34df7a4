"""The authors' cell-type labels beside mscflow's: a cross table and a heat map.

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


def crosstab_heatmap(table: pd.DataFrame, published: str) -> plt.Figure:
    """Heat map of the row fractions (published label x mscflow label), each cell
    annotated with its count of cells."""

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
                cbar_kws={"label": "share of the published label's cells", "shrink": 0.6})
    name = published.removeprefix(PUBLISHED_PREFIX)
    ax.set_title(f"Published '{name}' vs mscflow cell_type (numbers: cells)")
    ax.set_xlabel("mscflow cell_type")
    ax.set_ylabel(f"published {name}")
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
