"""The authors' labels as the run's cell types (``annotation.source: published``).

A published label column (carried from the input files with the sample sheet's
``keep_obs``, as ``published_<column>``) is mapped onto mscflow's cell-type names by a
user-editable table (``resources/annotation/published_cell_types.tsv``: CELLxGENE / Cell
Ontology names); names not in the table stay as written, cells without a label are
``unassigned``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from mscflow.errors import InputDataError
from mscflow.inputs.readers import published_name
from mscflow.vocab import UNASSIGNED

log = logging.getLogger(__name__)

NAME_TABLE_COLUMNS = ("published_name", "cell_type")


def _key(name: str) -> str:
    return " ".join(str(name).split()).casefold()


def read_name_table(path: str | Path) -> dict[str, str]:
    """The published-name table: normalised name (case and spaces ignored) -> cell type.

    Raises :class:`InputDataError` naming the file for a missing file or column, an
    empty cell or a name mapped twice to different types."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"annotation.published_names: no file {path}; give a TSV with "
                             "columns published_name and cell_type (the shipped one is "
                             "resources/annotation/published_cell_types.tsv)")
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment="#")
    missing = [c for c in NAME_TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise InputDataError(f"{path}: no column {', '.join(missing)} (has "
                             f"{', '.join(table.columns)}); the table needs published_name "
                             "and cell_type")
    out: dict[str, str] = {}
    for line, row in enumerate(table.itertuples(index=False), start=2):
        name, cell_type = row.published_name.strip(), row.cell_type.strip()
        if not name or not cell_type:
            raise InputDataError(f"{path} line {line}: empty published_name or cell_type")
        key = _key(name)
        if out.get(key, cell_type) != cell_type:
            raise InputDataError(f"{path} line {line}: '{name}' is mapped to both "
                                 f"{out[key]} and {cell_type}; keep one row")
        out[key] = cell_type
    return out


def map_published_labels(labels: pd.Series, names: Mapping[str, str]) -> pd.Series:
    """Each published label as mscflow's cell type (``names`` from
    :func:`read_name_table`); unmapped names stay as written, missing labels become
    ``unassigned``. Logs what was mapped and what was kept as written."""
    text = labels.astype(object)
    missing = text.isna() | (text.astype(str).str.strip() == "")
    mapped = text.astype(str).map(lambda v: names.get(_key(v), v.strip()))
    mapped[missing] = UNASSIGNED
    pairs = pd.DataFrame({"published": text[~missing].astype(str),
                          "cell_type": mapped[~missing]}).value_counts()
    for (published, cell_type), n in pairs.items():
        how = "kept as written" if _key(published) not in names else f"-> {cell_type}"
        log.info("published label %r (%d cells) %s", published, n, how)
    if missing.any():
        log.info("%d cells without a published label: unassigned", int(missing.sum()))
    return mapped.rename(labels.name)


def published_labels(obs: pd.DataFrame, column: str | None, names: Mapping[str, str]
                     ) -> pd.Series:
    """The mapped published labels of obs column ``published_<column>``; an error naming
    ``annotation.published_column`` and ``keep_obs`` when it is not carried."""
    if not column:
        raise InputDataError("annotation.source is published but annotation.published_column "
                             "is not set: name the input files' label column (and list it "
                             "in the sample sheet's keep_obs)")
    carried = published_name(column)
    if carried not in obs:
        raise InputDataError(f"annotation.published_column '{column}' is not in the merged "
                             f"data (no obs column {carried!r}): add '{column}' to the "
                             "keep_obs of the sample sheet's rows")
    return map_published_labels(obs[carried], names)
