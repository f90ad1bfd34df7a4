"""Reading one sample's raw counts, from the layouts public data come in.

Every reader returns an AnnData whose ``X`` holds raw integer counts as float32 CSR,
``var_names`` gene symbols (unique) and ``obs_names`` the cell names of the file.

Formats: Cell Ranger folders (``10x_mtx``), ``10x_h5``, ``h5ad`` and ``loom``. An h5ad or
loom file may hold many samples: the sheet's ``obs_filter`` (``column=value[;...]``) takes
one sample's cells, reading only their rows (:mod:`mscflow.inputs.matrixfiles`), so a job's memory
follows the sample, not the file. ``layer`` names the counts (``raw`` = ``.raw.X`` with
``.raw.var_names``), ``var_symbols`` a var column of symbols when ``var_names`` are ids, and
``keep_obs`` obs columns carried into the result as ``published_<column>``.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from mscflow.errors import InputDataError
from mscflow.inputs.matrixfiles import (
    RAW_LAYER,
    CountRounding,
    MatrixSource,
    counts_hint,
    open_matrix_file,
    read_options_problem,
)
from mscflow.inputs.tenx import read_mtx_folder

log = logging.getLogger(__name__)

FORMATS = ("10x_mtx", "10x_h5", "h5ad", "loom")
# Formats whose files carry per-cell columns (obs_filter, keep_obs) and gene columns.
ANNOTATED_FORMATS = ("h5ad", "loom")
# A sample whose symbols are less than this share in the sheet's species' style is refused.
SPECIES_MIN_MATCH = 0.5
# Fewer classifiable gene names than this: too few to judge the species.
SPECIES_MIN_GENES = 20
# Gene names of which at least this share are Ensembl ids need `var_symbols`.
ENSEMBL_MIN_SHARE = 0.5
# obs columns carried with keep_obs get this prefix, so they never meet mscflow's own
# columns (the authors' `cell_type` becomes `published_cell_type` beside mscflow's).
PUBLISHED_PREFIX = "published_"
_ENSEMBL = {"mouse": re.compile(r"^ENSMUSG\d"), "human": re.compile(r"^ENSG\d")}
_ANY_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d")


def parse_obs_filter(text: str) -> list[tuple[str, str]]:
    """``"donor_id=D1;tissue=lung"`` -> ``[("donor_id", "D1"), ("tissue", "lung")]``.

    A value is everything after the first ``=`` (it may hold ``=``); empty text gives [].
    Raises ValueError for a term without ``=`` or with an empty column name.
    """
    terms = []
    for term in filter(None, (t.strip() for t in str(text or "").split(";"))):
        column, sep, value = term.partition("=")
        if not sep or not column.strip():
            raise ValueError(f"obs_filter term {term!r} is not column=value")
        terms.append((column.strip(), value.strip()))
    return terms


def parse_keep_obs(text: str | Sequence[str]) -> list[str]:
    """``"cell_type,donor_id"`` (``,`` or ``;`` between names, or a list of such texts) ->
    a list of column names."""
    if not isinstance(text, str):
        text = ",".join(map(str, text))
    return [c.strip() for c in re.split(r"[,;]", text or "") if c.strip()]


def published_name(column: str) -> str:
    """The obs column a ``keep_obs`` column is carried as."""
    return f"{PUBLISHED_PREFIX}{column}"


def add_published_columns(adata: ad.AnnData, keep_obs: str | Sequence[str]) -> None:
    """Add the carried columns of ``keep_obs`` that ``adata`` lacks, empty (in place):
    samples are merged on the columns they share, so every sample of a run carries every
    row's ``keep_obs`` (empty where its file has no such column)."""
    for column in map(published_name, parse_keep_obs(keep_obs)):
        if column not in adata.obs:
            adata.obs[column] = pd.Categorical([None] * adata.n_obs, categories=[])


# Advice for a 10x input holding values that are not counts (10x inputs have no layer).
TENX_COUNTS_HINT = ("A 10x matrix holds Cell Ranger's raw counts: re-export the counts, or "
                    "point `path` at the raw-count file of this sample.")


def _mtx_folder_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else []


def check_format_matches(path: Path, fmt: str, sample: str) -> None:
    """Raise if ``path`` cannot hold ``fmt`` (a folder for 10x_mtx, an HDF5 file otherwise)."""
    if fmt == "10x_mtx":
        names = _mtx_folder_files(path)
        if not path.is_dir() or not any(n.startswith("matrix.mtx") for n in names):
            raise InputDataError(
                f"sample '{sample}': format is 10x_mtx but '{path}' is not a folder holding "
                f"matrix.mtx[.gz] (found: {names or 'a file'}). Point `path` at the Cell "
                "Ranger folder or change `format` in the sample sheet."
            )
    elif path.is_dir():
        raise InputDataError(
            f"sample '{sample}': format is {fmt} but '{path}' is a folder. Use format "
            "10x_mtx for Cell Ranger folders, or point `path` at the file."
        )
    else:
        with open(path, "rb") as fh:
            magic = fh.read(8)
        if magic != b"\x89HDF\r\n\x1a\n":
            raise InputDataError(
                f"sample '{sample}': '{path}' is not an HDF5 file, so it cannot be {fmt}. "
                "Check `format` in the sample sheet, or re-download the file if it is "
                "truncated."
            )


def _unreadable(sample: str, path: Path, fmt: str, err: Exception) -> InputDataError:
    return InputDataError(
        f"sample '{sample}': could not read '{path}' as {fmt} ({type(err).__name__}: "
        f"{err}). The file may be truncated or corrupt: re-download or re-export it."
    )


def read_sample(path: str | Path, fmt: str, *, sample: str, layer: str | None = None,
                obs_filter: str = "", var_symbols: str = "",
                keep_obs: str | Sequence[str] = "") -> ad.AnnData:
    """Read one sample's raw counts as cells x genes float32 CSR.

    ``fmt`` is ``10x_mtx`` (Cell Ranger v2 or v3 folder, gzipped or not), ``10x_h5``,
    ``h5ad`` or ``loom``. For h5ad and loom: ``layer`` holds the counts (empty = ``X`` or
    loom's main matrix, ``raw`` = ``.raw.X``), ``obs_filter`` selects the sample's cells,
    ``var_symbols`` names the gene-symbol column and ``keep_obs`` the obs columns carried
    as ``published_<column>``. Integer-valued floats with round-off below 1e-6 are rounded
    (logged once). Bad input raises :class:`InputDataError` naming the sample and file.
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise InputDataError(f"sample '{sample}': unknown format '{fmt}'; use one of {FORMATS}")
    if not path.exists():
        raise InputDataError(
            f"sample '{sample}': path '{path}' does not exist. Fix `path` in the sample sheet."
        )
    check_format_matches(path, fmt, sample)
    if fmt in ANNOTATED_FORMATS:
        return _read_matrix_file(path, fmt, sample=sample, layer=layer or "",
                                 obs_filter=obs_filter, var_symbols=var_symbols,
                                 keep_obs=parse_keep_obs(keep_obs))
    unsupported = {k: v for k, v in (("layer", layer), ("obs_filter", obs_filter),
                                     ("var_symbols", var_symbols), ("keep_obs", keep_obs)) if v}
    if unsupported:
        raise InputDataError(
            f"sample '{sample}': {sorted(unsupported)} apply to h5ad and loom files only, but "
            f"'{path}' is {fmt}. Empty those columns of the sample sheet for this row."
        )
    import scanpy as sc  # here: the sheet checks import this module without reading 10x

    try:
        if fmt == "10x_mtx":
            adata = read_mtx_folder(path, sample=sample)
        else:
            adata = sc.read_10x_h5(path)
    except InputDataError:
        raise
    except Exception as err:  # noqa: BLE001 - re-raised with the sample named
        raise _unreadable(sample, path, fmt, err) from err
    adata = ad.AnnData(X=sp.csr_matrix(adata.X),
                       obs=pd.DataFrame(index=adata.obs_names.astype(str)),
                       var=pd.DataFrame(index=adata.var_names.astype(str)))
    adata.var_names_make_unique()  # 10x symbols repeat (their ids do not), as scanpy does
    rounding = CountRounding(sample=sample, source=str(path), hint=TENX_COUNTS_HINT)
    adata.X = rounding.csr(adata.X)
    rounding.report()
    validate_counts(adata, sample=sample, source=str(path), hint=TENX_COUNTS_HINT)
    return adata


@contextmanager
def reading(sample: str, path: Path, fmt: str) -> Iterator[None]:
    """Turn any failure to read a file into an :class:`InputDataError` naming the sample."""
    try:
        yield
    except InputDataError:
        raise
    except Exception as err:  # noqa: BLE001 - re-raised with the sample named
        raise _unreadable(sample, path, fmt, err) from err


def _read_matrix_file(path: Path, fmt: str, *, sample: str, layer: str, obs_filter: str,
                      var_symbols: str, keep_obs: list[str]) -> ad.AnnData:
    """One sample of an h5ad or loom file: its cells, its counts, its gene symbols."""
    with reading(sample, path, fmt), open_matrix_file(path, fmt) as source:
        mask = check_source(source, sample=sample, species="", layer=layer,
                            obs_filter=obs_filter, var_symbols=var_symbols, keep_obs=keep_obs)
        names = gene_names(source, layer, var_symbols, sample=sample)
        rows = None if mask is None else np.flatnonzero(mask)
        if rows is not None:
            log.info("obs_filter %s: %d of %d cells of '%s'", obs_filter, len(rows),
                     source.n_obs, path)
        obs_names = source.obs_names()
        obs = pd.DataFrame(index=pd.Index(obs_names if rows is None else obs_names[rows],
                                          dtype=str))
        for column in keep_obs:
            values = source.obs_column(column)
            obs[published_name(column)] = values if rows is None else values[rows]
        rounding = CountRounding(sample=sample, source=f"'{path}' ({source.describe(layer)})",
                                 hint=counts_hint(source, layer))
        matrix = source.read_rows(layer, rows, rounding)
    rounding.report()
    adata = ad.AnnData(X=matrix, obs=obs, var=pd.DataFrame(index=names))
    validate_counts(adata, sample=sample, source=str(path))
    return adata


def check_source(source: MatrixSource, *, sample: str, species: str, layer: str,
                 obs_filter: str, var_symbols: str, keep_obs: Sequence[str]
                 ) -> np.ndarray | None:
    """Every check of one sample that needs a file's columns but not its matrix: the sheet's
    reading columns exist, the genes are named by symbols of ``species``, and ``obs_filter``
    selects cells. Returns the selected cells (None without a filter); raises
    :class:`InputDataError` naming the sample, the file and the fix."""
    filters = parse_obs_filter(obs_filter)
    problem = read_options_problem(source, layer=layer, obs_filter=filters,
                                   var_symbols=var_symbols, keep_obs=parse_keep_obs(keep_obs))
    if problem:
        raise InputDataError(f"sample '{sample}': {problem}")
    if species:
        ids = source.var_names(layer)
        problem = species_problem(ids, species, sample=sample, source=str(source.path))
        names = gene_names(source, layer, var_symbols, sample=sample)
        problem = problem or species_problem(names, species, sample=sample,
                                             source=str(source.path))
        if problem:
            raise InputDataError(problem)
    return select_cells(source, filters, sample=sample) if filters else None


def select_cells(source: MatrixSource, filters: Sequence[tuple[str, str]], *,
                 sample: str) -> np.ndarray:
    """Boolean mask of the cells matching every ``column=value`` of ``filters`` (values
    compared as text). Raises :class:`InputDataError` listing the column's values when a
    filter selects no cell."""
    mask = np.ones(source.n_obs, dtype=bool)
    for column, value in filters:
        values = pd.Series(np.asarray(source.obs_column(column), dtype=object)).astype(str)
        hit = (values == value).to_numpy()
        if not hit.any():
            present = values.value_counts()
            shown = ", ".join(f"{v!r} ({n})" for v, n in present.head(12).items())
            more = f" and {len(present) - 12} more" if len(present) > 12 else ""
            raise InputDataError(
                f"sample '{sample}': obs_filter {column}={value} selects no cell of "
                f"'{source.path}'; column '{column}' holds {shown}{more}. Fix the value in "
                "the sample sheet's `obs_filter` (text must match exactly, case included)."
            )
        mask &= hit
    if not mask.any():
        raise InputDataError(
            f"sample '{sample}': obs_filter {';'.join(f'{c}={v}' for c, v in filters)} "
            f"selects no cell of '{source.path}' (each term matches cells, but no cell "
            "matches them all). Fix `obs_filter` in the sample sheet."
        )
    return mask


def selected_share(path: str | Path, fmt: str, obs_filter: str) -> float:
    """Share of the file's cells that ``obs_filter`` selects (1.0 without a filter, for
    formats without per-cell columns, or when the filter cannot be applied: the QC job
    then reports that problem itself). Resource requests scale a shared file's size by it,
    so a job on one donor of a many-donor h5ad asks for memory following its cells."""
    if fmt not in ANNOTATED_FORMATS or not obs_filter.strip():
        return 1.0
    stat = Path(path).stat()
    return _selected_share(str(path), fmt, obs_filter, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=1024)
def _selected_share(path: str, fmt: str, obs_filter: str, size: int, mtime_ns: int) -> float:
    """:func:`selected_share`, cached per file version (Snakemake evaluates every resource
    function of every job, and each reads the same obs columns)."""
    try:
        with open_matrix_file(path, fmt) as source:
            return float(select_cells(source, parse_obs_filter(obs_filter), sample="").mean())
    except (InputDataError, OSError, KeyError, ValueError):  # the QC job names the problem
        return 1.0


def gene_names(source: MatrixSource, layer: str, var_symbols: str, *,
               sample: str) -> pd.Index:
    """Gene names of the counts read from ``layer``: the var index, or the ``var_symbols``
    column with ids kept where a symbol is missing, made unique as scanpy does (repeats
    get ``-1``, ``-2``...; counts are not summed), the choice logged."""
    ids = pd.Index(source.var_names(layer).astype(str))
    if not var_symbols:
        if ensembl_share(ids) >= ENSEMBL_MIN_SHARE:
            raise InputDataError(ensembl_without_symbols_message(
                sample, source.path, ids, source.var_columns(layer)))
        return ids
    symbols = pd.Series(source.var_column(layer, var_symbols), index=ids, dtype=object)
    missing = symbols.isna() | (symbols.astype(str).str.strip() == "")
    if missing.any():
        log.info("%d of %d genes have no symbol in var column '%s'; their ids are kept "
                 "(e.g. %s)", missing.sum(), len(ids), var_symbols,
                 ", ".join(ids[missing.to_numpy()][:3]))
    names = pd.Index(np.where(missing, ids, symbols.astype(str)), dtype=str)
    repeated = names[names.duplicated()].unique()
    if len(repeated):
        log.info("%d symbol(s) of var column '%s' name several ids (e.g. %s): suffixed "
                 "-1, -2... as scanpy's var_names_make_unique does (counts not summed)",
                 len(repeated), var_symbols, ", ".join(repeated[:5]))
        names = pd.Index(ad.utils.make_index_unique(names), dtype=str)
    return names


def ensembl_share(names: Iterable[str]) -> float:
    """Share of ``names`` that are Ensembl gene ids (ENSG, ENSMUSG...)."""
    names = [str(n) for n in names]
    return sum(bool(_ANY_ENSEMBL.match(n)) for n in names) / max(len(names), 1)


def ensembl_without_symbols_message(sample: str, path: str | Path, ids: Sequence[str],
                                    var_columns: Sequence[str]) -> str:
    """Message for var_names that are Ensembl ids when the sheet names no symbol column."""
    likely = [c for c in var_columns if re.search(r"name|symbol", c, re.IGNORECASE)]
    return (
        f"sample '{sample}': the gene names of '{path}' are Ensembl ids (e.g. "
        f"{', '.join(map(str, ids[:3]))}), but gene sets need symbols. Set `var_symbols` in "
        f"the sample sheet to the var column holding them"
        + (f" (likely {', '.join(repr(c) for c in likely)})" if likely else "")
        + f"; var columns: {list(var_columns)}."
    )


def check_unique_genes(adata: ad.AnnData, *, sample: str, source: str) -> None:
    """Raise if gene names repeat (an h5ad's var_names are the user's choice)."""
    if adata.var_names.has_duplicates:
        dups = adata.var_names[adata.var_names.duplicated()].unique()
        raise InputDataError(
            f"sample '{sample}': '{source}' has {len(dups)} duplicate gene name(s), e.g. "
            f"{dups[:5].tolist()}; each gene must appear once. Sum or drop the repeats, or "
            "call adata.var_names_make_unique() before writing the h5ad."
        )


def symbol_styles(genes: Iterable[str]) -> dict[str, list[str]]:
    """Gene names written mouse-style (``Actb``, ``mt-Co1``, ENSMUSG...) and human-style
    (``ACTB``, ``MT-CO1``, ENSG...); names of neither style (numbers, other Ensembl) are left out.
    """
    out: dict[str, list[str]] = {"mouse": [], "human": []}
    for gene in map(str, genes):
        if _ANY_ENSEMBL.match(gene):
            for species, pattern in _ENSEMBL.items():
                if pattern.match(gene):
                    out[species].append(gene)
        elif gene[:1].isupper() and any(c.islower() for c in gene) or gene.startswith("mt-"):
            out["mouse"].append(gene)
        elif any(c.isupper() for c in gene) and not any(c.islower() for c in gene):
            out["human"].append(gene)
    return out


def species_problem(genes: Iterable[str], species: str, *, sample: str, source: str,
                    min_match: float = SPECIES_MIN_MATCH) -> str | None:
    """Why ``genes`` do not look like ``species`` (the message), or None if they do."""
    styles = symbol_styles(genes)
    other = "human" if species == "mouse" else "mouse"
    total = len(styles["mouse"]) + len(styles["human"])
    if species not in styles or total < SPECIES_MIN_GENES:
        return None
    share = len(styles[species]) / total
    if share >= min_match:
        return None
    example = {"mouse": "Actb, mt-Co1, ENSMUSG...", "human": "ACTB, MT-CO1, ENSG..."}
    return (
        f"sample '{sample}': the sample sheet says {species}, but only {share:.0%} of the "
        f"{total} gene names in '{source}' look {species} (like {example[species]}); "
        f"{1 - share:.0%} look {other} (e.g. {', '.join(styles[other][:5])}). This is "
        f"likely a {other} sample: fix `species` in the sample sheet (human and mouse "
        "samples go in separate runs) or remove the sample."
    )


def check_species(adata: ad.AnnData, species: str, *, sample: str, source: str,
                  min_match: float = SPECIES_MIN_MATCH) -> None:
    """Raise if too few gene names look like the sample sheet's species (e.g. human data
    in a mouse run): the message names the sample, the shares and the likely species."""
    problem = species_problem(adata.var_names, species, sample=sample, source=source,
                              min_match=min_match)
    if problem:
        raise InputDataError(problem)


def validate_counts(adata: ad.AnnData, *, sample: str, source: str, hint: str = "") -> None:
    """Raise if the matrix is empty, negative, not finite, non-integer or has duplicate
    barcodes or genes (round-off is handled by the readers, see ``CountRounding``).

    ``hint`` replaces the advice to pick the raw-count layer (for inputs without layers).
    """
    if adata.n_obs == 0 or adata.n_vars == 0 or adata.X.nnz == 0:
        raise InputDataError(
            f"sample '{sample}': '{source}' holds an empty matrix ({adata.n_obs} cells x "
            f"{adata.n_vars} genes, {getattr(adata.X, 'nnz', 0)} non-zeros). Point `path` "
            "at the sample's count matrix (e.g. Cell Ranger's filtered_feature_bc_matrix) or "
            "remove the sample from the sheet."
        )
    data = adata.X.data
    if not np.isfinite(data).all():
        raise InputDataError(
            f"sample '{sample}': '{source}' contains NaN or infinite values; mscflow needs raw "
            "counts. " + (hint or "Set `layer` to the raw-count layer or re-export the counts.")
        )
    if (data < 0).any():
        raise InputDataError(
            f"sample '{sample}': '{source}' contains negative values; mscflow needs raw "
            "counts. " + (hint or "Set `layer` to the raw-count layer (`raw` for .raw.X).")
        )
    CountRounding(sample=sample, source=f"'{source}'", hint=hint).check(data)
    if adata.obs_names.has_duplicates:
        dups = adata.obs_names[adata.obs_names.duplicated()].unique()[:5].tolist()
        raise InputDataError(
            f"sample '{sample}': '{source}' has duplicate barcodes {dups}; each barcode "
            "must appear once per sample: re-export the matrix without repeated cells."
        )
    check_unique_genes(adata, sample=sample, source=source)


def prefix_barcodes(adata: ad.AnnData, sample: str) -> None:
    """Make cell names unique across samples as ``<sample>:<barcode>`` (in place)."""
    adata.obs["barcode"] = adata.obs_names.astype(str)
    adata.obs_names = [f"{sample}:{b}" for b in adata.obs_names]


__all__ = [
    "ANNOTATED_FORMATS", "FORMATS", "PUBLISHED_PREFIX", "RAW_LAYER", "add_published_columns",
    "check_format_matches", "check_source", "check_species", "check_unique_genes",
    "ensembl_share", "gene_names", "parse_keep_obs", "parse_obs_filter", "prefix_barcodes",
    "published_name", "read_sample", "select_cells", "species_problem", "symbol_styles",
    "validate_counts",
]
