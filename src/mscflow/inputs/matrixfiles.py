"""h5ad and loom files as read by mscflow: their layout, their per-cell columns, and the
count rows of a selection read block by block.

A public h5ad often holds every sample of a study (the CELLxGENE layout: obs columns such as
``donor_id``, Ensembl ids as ``var_names`` with symbols in ``feature_name``, normalised
values in ``X`` and counts in ``.raw.X``). :func:`open_matrix_file` opens one without
loading it: obs and var columns are read one at a time (``anndata.io.read_elem``), and
:meth:`MatrixSource.read_rows` reads only the rows of the selected cells, in blocks of at
most ``BLOCK_VALUES`` stored values, straight into the result; so a job's memory is about
its sample's share of the file. Loom files (velocyto, many GEO series) are read through
loompy: counts from the main matrix (or a named layer); the spliced/unspliced layers are
not read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from mscflow.config import nearest_key
from mscflow.errors import InputDataError

log = logging.getLogger(__name__)

RAW_LAYER = "raw"  # the sheet's `layer` value that reads .raw.X with .raw.var_names
# |x - round(x)| below this is round-off of an integer count: rounded, said once in the log.
ROUNDOFF_TOLERANCE = 1e-6
# Stored values (non-zeros of a sparse matrix, all values of a dense one) read at a time.
BLOCK_VALUES = 1 << 23
# Unselected rows between two selected ones read through rather than skipped by a new read.
MAX_GAP_ROWS = 64


# ------------------------------------------------------------------------ counts check
@dataclass
class CountRounding:
    """Checks that values are counts while they are read: integer-valued floats with
    round-off below ``ROUNDOFF_TOLERANCE`` are rounded (logged once by :meth:`report`);
    larger deviations raise :class:`InputDataError` naming the sample, the source and,
    through ``hint``, the layer to use instead."""

    sample: str
    source: str
    hint: str
    max_deviation: float = 0.0

    def check(self, data: np.ndarray) -> bool:
        """Raise on non-integer values; True if ``data`` needs rounding."""
        if data.dtype.kind in "iub" or data.size == 0:
            return False
        with np.errstate(invalid="ignore"):
            deviation = np.abs(data - np.rint(data))
        worst = float(np.nanmax(deviation)) if np.isfinite(deviation).any() else 0.0
        if worst >= ROUNDOFF_TOLERANCE:
            example = data.flat[int(np.nanargmax(deviation))]
            raise InputDataError(
                f"sample '{self.sample}': {self.source} holds non-integer values (e.g. "
                f"{example:.6g}), which looks like normalised data; mscflow needs raw counts. "
                + (self.hint or "Set `layer` in the sample sheet to the raw-count layer "
                   "(e.g. 'counts', or `raw` for .raw.X).")
            )
        self.max_deviation = max(self.max_deviation, worst)
        return worst > 0

    def values(self, data: np.ndarray) -> np.ndarray:
        """``data`` checked, rounded where needed, as float32."""
        if self.check(data):
            data = np.rint(data)
        return data.astype(np.float32, copy=False)

    def csr(self, matrix: object) -> sp.csr_matrix:
        """A matrix as checked float32 CSR without stored zeros."""
        out = sp.csr_matrix(matrix)
        out.data = self.values(out.data)
        out.eliminate_zeros()
        return out

    def report(self) -> None:
        """Say once that round-off was rounded away."""
        if self.max_deviation > 0:
            log.info("sample '%s': %s holds integer counts with floating-point round-off "
                     "(largest |x - round(x)| = %.2g < %g); rounded to integers",
                     self.sample, self.source, self.max_deviation, ROUNDOFF_TOLERANCE)


# ------------------------------------------------------------------------ row blocks
def _row_groups(rows: np.ndarray, cost_before: Callable[[np.ndarray], np.ndarray]
                ) -> Iterator[tuple[int, int, int, int]]:
    """Split sorted ``rows`` into groups read as one contiguous block each.

    ``cost_before(r)`` is the number of stored values before row ``r``. A group ends at a
    gap of more than ``MAX_GAP_ROWS`` rows or when its block would pass ``BLOCK_VALUES``.
    Yields ``(i0, i1, start, stop)``: rows[i0:i1] lie in file rows [start, stop).
    """
    begin = cost_before(rows)
    end = cost_before(rows + 1)
    i0 = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i] - rows[i - 1] > MAX_GAP_ROWS + 1 or (
                end[i] - begin[i0] > BLOCK_VALUES):
            yield i0, i, int(rows[i0]), int(rows[i - 1]) + 1
            i0 = i


def read_csr_rows(group: h5py.Group, rows: np.ndarray, n_vars: int,
                  rounding: CountRounding) -> sp.csr_matrix:
    """Rows of an on-disk CSR matrix (h5ad encoding), block by block, into preallocated
    arrays: peak memory is the result plus one block."""
    indptr = group["indptr"][...].astype(np.int64)
    lengths = indptr[rows + 1] - indptr[rows]
    out_indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out_indptr[1:])
    data = np.empty(out_indptr[-1], dtype=np.float32)
    indices = np.empty(out_indptr[-1], dtype=np.int32 if n_vars < 2**31 else np.int64)
    for i0, i1, start, stop in _row_groups(rows, lambda r: indptr[r]):
        lo, hi = indptr[start], indptr[stop]
        block_data = rounding.values(group["data"][lo:hi])
        block_indices = group["indices"][lo:hi]
        # positions of the selected rows' values in the block, row after row
        out_start = out_indptr[i0:i1] - out_indptr[i0]
        take = np.repeat(indptr[rows[i0:i1]] - lo - out_start, lengths[i0:i1])
        take += np.arange(len(take))
        data[out_indptr[i0]:out_indptr[i1]] = block_data[take]
        indices[out_indptr[i0]:out_indptr[i1]] = block_indices[take]
    out = sp.csr_matrix((data, indices, out_indptr), shape=(len(rows), n_vars))
    out.eliminate_zeros()
    return out


def read_dense_rows(read_block: Callable[[int, int], np.ndarray], rows: np.ndarray,
                    n_vars: int, rounding: CountRounding) -> sp.csr_matrix:
    """Rows of a dense on-disk matrix; ``read_block(start, stop)`` gives rows
    [start, stop) as a cells x genes array."""
    pieces = []
    for i0, i1, start, _stop in _row_groups(rows, lambda r: r.astype(np.int64) * n_vars):
        block = read_block(start, _stop)[rows[i0:i1] - start]
        pieces.append(rounding.csr(block))
    if not pieces:
        return sp.csr_matrix((0, n_vars), dtype=np.float32)
    return sp.vstack(pieces, format="csr")


# ------------------------------------------------------------------------ sources
class MatrixSource(Protocol):
    """What mscflow reads from an h5ad or loom file (see :func:`open_matrix_file`)."""

    path: Path
    n_obs: int
    obs_columns: list[str]
    layers: list[str]
    has_raw: bool

    def layout_problem(self) -> str | None: ...
    def obs_names(self) -> np.ndarray: ...
    def obs_column(self, name: str) -> np.ndarray | pd.Categorical: ...
    def var_names(self, layer: str) -> np.ndarray: ...
    def var_columns(self, layer: str) -> list[str]: ...
    def var_column(self, layer: str, name: str) -> np.ndarray: ...
    def read_rows(self, layer: str, rows: np.ndarray | None,
                  rounding: CountRounding) -> sp.csr_matrix: ...
    def describe(self, layer: str) -> str: ...


def _frame_index(group: h5py.Group) -> np.ndarray:
    return np.asarray(ad.io.read_elem(group[group.attrs["_index"]])).astype(str)


def _frame_columns(group: h5py.Group) -> list[str]:
    return [str(c) for c in group.attrs.get("column-order", [])]


class H5adSource:
    """An h5ad file opened with h5py: columns read one at a time, rows by selection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = h5py.File(path, "r")
        self.obs_columns = _frame_columns(self.file["obs"])
        self.layers = sorted(self.file["layers"]) if "layers" in self.file else []
        self.has_raw = "raw" in self.file and "X" in self.file["raw"]
        self.n_obs = len(self.file["obs"][self.file["obs"].attrs["_index"]])

    def close(self) -> None:
        self.file.close()

    def layout_problem(self) -> str | None:
        return None

    def obs_names(self) -> np.ndarray:
        return _frame_index(self.file["obs"])

    def obs_column(self, name: str) -> np.ndarray | pd.Categorical:
        return ad.io.read_elem(self.file["obs"][name])

    def _var(self, layer: str) -> h5py.Group:
        return self.file["raw/var"] if layer == RAW_LAYER else self.file["var"]

    def var_names(self, layer: str) -> np.ndarray:
        return _frame_index(self._var(layer))

    def var_columns(self, layer: str) -> list[str]:
        own = _frame_columns(self._var(layer))
        if layer != RAW_LAYER:
            return own
        return own + [c for c in _frame_columns(self.file["var"]) if c not in own]

    def var_column(self, layer: str, name: str) -> np.ndarray:
        """A var column; for ``raw`` taken from raw.var, else from var matched by id."""
        group = self._var(layer)
        if name in _frame_columns(group):
            return np.asarray(ad.io.read_elem(group[name]), dtype=object)
        values = pd.Series(np.asarray(ad.io.read_elem(self.file["var"][name]), dtype=object),
                           index=_frame_index(self.file["var"]))
        return values.reindex(self.var_names(layer)).to_numpy(dtype=object)

    def _matrix(self, layer: str) -> h5py.Group | h5py.Dataset:
        if layer == RAW_LAYER:
            return self.file["raw/X"]
        return self.file[f"layers/{layer}"] if layer else self.file["X"]

    def describe(self, layer: str) -> str:
        return ".raw.X" if layer == RAW_LAYER else (f"layer '{layer}'" if layer else "X")

    def read_rows(self, layer: str, rows: np.ndarray | None,
                  rounding: CountRounding) -> sp.csr_matrix:
        elem = self._matrix(layer)
        rows = np.arange(self.n_obs) if rows is None else np.asarray(rows, dtype=np.int64)
        if isinstance(elem, h5py.Dataset):
            return read_dense_rows(lambda a, b: elem[a:b], rows, elem.shape[1], rounding)
        encoding = elem.attrs.get("encoding-type", "")
        n_vars = int(elem.attrs["shape"][1])
        if encoding == "csr_matrix":
            return read_csr_rows(elem, rows, n_vars, rounding)
        log.warning("%s of '%s' is stored by column (%s): the whole matrix is read to take "
                    "%d rows", self.describe(layer), self.path, encoding, len(rows))
        return rounding.csr(sp.csr_matrix(ad.io.read_elem(elem))[rows])


class LoomSource:
    """A loom file opened with loompy: cells are columns, ``CellID`` names them, ``Gene``
    (else ``Accession``) names the genes; counts in the main matrix or a named layer."""

    CELL_NAMES = "CellID"
    GENE_NAMES = ("Gene", "Accession")

    def __init__(self, path: Path) -> None:
        import loompy

        self.path = path
        self.connection = loompy.connect(str(path), "r", validate=False)
        self.n_obs = int(self.connection.shape[1])
        self.obs_columns = [c for c in self.connection.ca.keys() if c != self.CELL_NAMES]
        self.layers = sorted(k for k in self.connection.layers.keys() if k != "")
        self.has_raw = False

    def close(self) -> None:
        self.connection.close()

    def layout_problem(self) -> str | None:
        if self.CELL_NAMES not in self.connection.ca.keys():
            return (f"'{self.path}' has no column attribute '{self.CELL_NAMES}' with the cell "
                    f"names (column attributes: {list(self.connection.ca.keys())}); write "
                    "the loom file with cell names, e.g. velocyto's, or convert it to h5ad.")
        if not any(g in self.connection.ra.keys() for g in self.GENE_NAMES):
            return (f"'{self.path}' has no row attribute {' or '.join(self.GENE_NAMES)} with "
                    "gene names; set `var_symbols` to the row attribute holding symbols "
                    f"(row attributes: {list(self.connection.ra.keys())}).")
        return None

    def obs_names(self) -> np.ndarray:
        return np.asarray(self.connection.ca[self.CELL_NAMES]).astype(str)

    def obs_column(self, name: str) -> np.ndarray:
        return np.asarray(self.connection.ca[name])

    def var_names(self, layer: str) -> np.ndarray:
        name = next(g for g in self.GENE_NAMES if g in self.connection.ra.keys())
        return np.asarray(self.connection.ra[name]).astype(str)

    def var_columns(self, layer: str) -> list[str]:
        return list(self.connection.ra.keys())

    def var_column(self, layer: str, name: str) -> np.ndarray:
        return np.asarray(self.connection.ra[name], dtype=object)

    def describe(self, layer: str) -> str:
        return f"layer '{layer}'" if layer else "main matrix"

    def read_rows(self, layer: str, rows: np.ndarray | None,
                  rounding: CountRounding) -> sp.csr_matrix:
        matrix = self.connection.layers[layer]
        rows = np.arange(self.n_obs) if rows is None else np.asarray(rows, dtype=np.int64)
        return read_dense_rows(lambda a, b: matrix[:, a:b].T, rows,
                               int(self.connection.shape[0]), rounding)


class MemorySource:
    """An h5ad of the pre-0.7 anndata layout (obs as one table), read whole by anndata."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.adata = ad.read_h5ad(path)
        self.n_obs = self.adata.n_obs
        self.obs_columns = [str(c) for c in self.adata.obs.columns]
        self.layers = sorted(self.adata.layers)
        self.has_raw = self.adata.raw is not None

    def close(self) -> None:
        self.adata = None

    def layout_problem(self) -> str | None:
        return None

    def obs_names(self) -> np.ndarray:
        return self.adata.obs_names.to_numpy(dtype=str)

    def obs_column(self, name: str) -> np.ndarray | pd.Categorical:
        return self.adata.obs[name].array

    def _var(self, layer: str) -> pd.DataFrame:
        return self.adata.raw.var if layer == RAW_LAYER else self.adata.var

    def var_names(self, layer: str) -> np.ndarray:
        return self._var(layer).index.to_numpy(dtype=str)

    def var_columns(self, layer: str) -> list[str]:
        own = [str(c) for c in self._var(layer).columns]
        return own + [str(c) for c in self.adata.var.columns if c not in own]

    def var_column(self, layer: str, name: str) -> np.ndarray:
        var = self._var(layer)
        column = var[name] if name in var else self.adata.var[name].reindex(var.index)
        return column.to_numpy(dtype=object)

    def describe(self, layer: str) -> str:
        return ".raw.X" if layer == RAW_LAYER else (f"layer '{layer}'" if layer else "X")

    def read_rows(self, layer: str, rows: np.ndarray | None,
                  rounding: CountRounding) -> sp.csr_matrix:
        if layer == RAW_LAYER:
            matrix = self.adata.raw.X
        else:
            matrix = self.adata.layers[layer] if layer else self.adata.X
        matrix = sp.csr_matrix(matrix)
        return rounding.csr(matrix if rows is None else matrix[rows])


@contextmanager
def open_matrix_file(path: str | Path, fmt: str) -> Iterator[MatrixSource]:
    """Open an h5ad (``fmt="h5ad"``) or loom file for reading columns and selected rows."""
    path = Path(path)
    if fmt == "loom":
        source: MatrixSource = LoomSource(path)
    else:
        with h5py.File(path, "r") as probe:
            legacy = not isinstance(probe.get("obs"), h5py.Group) or "_index" not in probe[
                "obs"].attrs
        source = MemorySource(path) if legacy else H5adSource(path)
    try:
        yield source
    finally:
        source.close()


def counts_hint(source: MatrixSource, layer: str) -> str:
    """Where else counts may be in the file, as the fix of a non-integer error."""
    options = []
    if source.has_raw and layer != RAW_LAYER:
        options.append("`layer: raw` (.raw.X)")
    options += [f"`layer: {name}`" for name in source.layers if name != layer]
    if layer:
        options.append("an empty `layer` (" + ("the main matrix" if isinstance(
            source, LoomSource) else "X") + ")")
    if options:
        return ("Set `layer` in the sample sheet to the layer holding raw counts; this file "
                f"offers {', '.join(options)}.")
    return ("This file holds no other matrix: use the deposit's raw-count file (e.g. the "
            "authors' count matrix or Cell Ranger output) instead.")


def _nearest(name: str, choices: Sequence[str]) -> str:
    hit = nearest_key(name, list(choices))
    return f" (did you mean '{hit}'?)" if hit else ""


def read_options_problem(source: MatrixSource, *, layer: str,
                         obs_filter: Sequence[tuple[str, str]], var_symbols: str,
                         keep_obs: Sequence[str]) -> str | None:
    """What is wrong with reading ``source`` with these sheet columns (message with the
    file and the fix), or None."""
    problem = source.layout_problem()
    if problem:
        return problem
    path = source.path
    if layer == RAW_LAYER and not source.has_raw:
        return (f"`layer: raw` but '{path}' has no .raw (layers: {source.layers}). Leave "
                "`layer` empty to read " + ("the main matrix" if isinstance(source, LoomSource)
                                            else "X") + ", or name the layer holding raw counts.")
    if layer and layer != RAW_LAYER and layer not in source.layers:
        return (f"layer '{layer}' not in '{path}' (layers: {source.layers}"
                + (", and .raw: `layer: raw`" if source.has_raw else "") + "). Set `layer` in "
                "the sample sheet to the raw-count layer, or leave it empty if X holds raw "
                "counts.")
    for what, columns in (("obs_filter", [c for c, _ in obs_filter]), ("keep_obs", keep_obs)):
        unknown = [c for c in columns if c not in source.obs_columns]
        if unknown:
            return (f"obs column(s) {unknown} of `{what}` not in '{path}'"
                    f"{_nearest(unknown[0], source.obs_columns)}; its obs columns: "
                    f"{source.obs_columns}. Fix `{what}` in the sample sheet.")
    if var_symbols and var_symbols not in source.var_columns(layer):
        return (f"var column '{var_symbols}' (`var_symbols`) not in '{path}'"
                f"{_nearest(var_symbols, source.var_columns(layer))}; var columns: "
                f"{source.var_columns(layer)}. Set `var_symbols` to the column holding gene "
                "symbols (e.g. feature_name), or leave it empty when var_names are symbols.")
    return None
