"""Cell-cell communication per sample with liana (LIANA+), the input of its condition tests.

Per sample (rule ``communication_sample``, :func:`communication_sample_stage`), on the
annotated cells (log-normalised ``X``, ``cell_type``), with liana's bundled resource read
offline (``mouseconsensus`` for mouse runs, ``consensus`` for human runs, or
``communication.resource``):

* cell types with fewer than ``min_cells`` cells in the sample, or listed in
  ``exclude_cell_types``, are left out and listed with the reason (``skipped``);
* ``liana.mt.rank_aggregate`` runs on the rest (sender and receiver = cell types; the
  sample is one tissue), seeded with the run's seed: the per-sample LIANA table
  (consensus ``magnitude_rank``/``specificity_rank`` and each method's score), with the
  ligand and receptor detection fractions liana's consensus does not report added;
* per cell type and resource gene: cells, mean of ``X`` and fraction of cells detecting it
  (``expression``). The condition tests (:mod:`mscflow.communication.contrast`) build every
  interaction's per-sample value from it, also in samples where liana drops the
  interaction (an undetected gene, a side below ``expr_prop``): liana keeps no value there,
  and a test that lost those samples would compare only samples that express it.

The definitions follow liana: a complex's mean and fraction are the minimum over its
subunits; ``lr_means`` = (ligand mean in the sender + receptor mean in the receiver) / 2
(CellPhoneDB, as liana computes it); ``lr_props`` = min(ligand fraction in the sender,
receptor fraction in the receiver), the share of cells behind the weaker side; an
interaction is expressed in a sample when ``lr_props >= expr_prop`` (liana's filter).
"""

from __future__ import annotations

import difflib
import logging
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mscflow import job
from mscflow.config import Settings, runtime_field, settings_section
from mscflow.errors import ConfigError, InputDataError
from mscflow.io import read_sample_rows

if TYPE_CHECKING:
    import anndata as ad

__all__ = [
    "KEYS",
    "RESOURCE_BY_SPECIES",
    "SKIPPED_COLUMNS",
    "CommunicationSettings",
    "FocusAxis",
    "FocusPairs",
    "cell_type_expression",
    "communication_sample",
    "communication_sample_stage",
    "complex_subunits",
    "entity_table",
    "liana_resources",
    "load_resource",
    "read_sample_cells",
    "resolve_focus",
    "resource_genes",
]

log = logging.getLogger(__name__)

# liana resource of a run by the sample sheet's species (communication.resource: auto).
RESOURCE_BY_SPECIES = {"mouse": "mouseconsensus", "human": "consensus"}
# Columns naming one interaction of one sample.
KEYS = ["sender", "receiver", "ligand", "receptor"]
# One row per thing left out: a (sample, cell type), a sample, or a focus gene, pair or
# cell type; ``reason`` says why and what it costs.
SKIPPED_COLUMNS = ["kind", "tissue", "sample", "cell_type", "n_cells", "focus_axis", "reason"]
# Columns of the per-sample expression table (the input of the tests).
EXPRESSION_COLUMNS = ["tissue", "sample", "condition", "cell_type", "n_cells", "gene",
                      "mean", "frac"]
OBS_COLUMNS = ("sample", "tissue", "condition", "cell_type")
COMPLEX_SEP = "_"


@dataclass(frozen=True)
class FocusAxis:
    """A ligand-receptor axis reported first: every ligand x receptor combination the
    resource holds, from ``senders`` to ``receivers`` (empty = every cell type)."""

    name: str
    ligands: tuple[str, ...]
    receptors: tuple[str, ...]
    senders: tuple[str, ...] = ()
    receivers: tuple[str, ...] = ()
    response_set: str | None = None


@settings_section("communication")
class CommunicationSettings(Settings):
    """``communication``: liana per sample and the focus axes (keys, types and defaults in
    the schema; config/README.md says what they mean). ``seed`` is the run's seed."""

    seed: int = runtime_field()

    def __post_init__(self) -> None:
        names = [a.name for a in self.axes]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError(
                f"communication: focus axis name(s) {repeated} are used more than once in "
                "focus_axes/extra_focus_axes; give every axis a unique name."
            )

    @property
    def axes(self) -> list[FocusAxis]:
        """``focus_axes`` then ``extra_focus_axes``, in config order."""
        return [
            FocusAxis(name=str(a["name"]), ligands=tuple(a["ligands"]),
                      receptors=tuple(a["receptors"]), senders=tuple(a["senders"]),
                      receivers=tuple(a["receivers"]), response_set=a["response_set"])
            for a in (*self.focus_axes, *self.extra_focus_axes)
        ]

    def resource_for(self, species: str) -> str:
        """The liana resource of a run of ``species`` (``auto`` picks it by species)."""
        if self.resource != "auto":
            return self.resource
        if species not in RESOURCE_BY_SPECIES:
            raise ConfigError(
                f"communication.resource 'auto' has no liana resource for species "
                f"{species!r} (known: {sorted(RESOURCE_BY_SPECIES)}); name a resource "
                "liana ships in communication.resource."
            )
        return RESOURCE_BY_SPECIES[species]


# ---------------------------------------------------------------------------- resource


def liana_resources() -> list[str]:
    """Names of the ligand-receptor resources the installed liana ships (read offline)."""
    import liana

    return sorted(liana.rs.show_resources())


def load_resource(name: str) -> pd.DataFrame:
    """liana's bundled resource ``name`` as unique ``ligand``, ``receptor`` rows (complex
    subunits joined by ``_``). An unknown name raises :class:`ConfigError` listing the
    resources liana ships; nothing is downloaded."""
    import liana

    available = liana_resources()
    if name not in available:
        hint = difflib.get_close_matches(name, available, n=1)
        raise ConfigError(
            f"communication.resource {name!r} is not a resource liana {liana.__version__} "
            f"ships{f' (did you mean {hint[0]!r}?)' if hint else ''}; choose one of "
            f"{available}, or 'auto' (mouseconsensus for mouse runs, consensus for human "
            "runs). Only bundled resources are used: the workflow downloads nothing here."
        )
    table = liana.rs.select_resource(name)[["ligand", "receptor"]]
    return table.dropna().drop_duplicates().sort_values(["ligand", "receptor"]).reset_index(
        drop=True)


def complex_subunits(entity: str) -> list[str]:
    """Genes of a resource entity (``Il10ra_Il10rb`` -> ``[Il10ra, Il10rb]``)."""
    return str(entity).split(COMPLEX_SEP)


def resource_genes(resource: pd.DataFrame) -> list[str]:
    """Every gene (complex subunit) of the resource, sorted."""
    entities = pd.unique(pd.concat([resource["ligand"], resource["receptor"]]))
    return sorted({g for e in entities for g in complex_subunits(e)})


# ------------------------------------------------------------------------ focus axes


@dataclass(frozen=True)
class FocusPairs:
    """The focus axes resolved against a resource: ``pairs`` (``focus_axis``, ``ligand``,
    ``receptor``, ``response_set``, ``senders``, ``receivers``; resource spelling, axis
    order) and ``problems`` (rows of :data:`SKIPPED_COLUMNS`)."""

    pairs: pd.DataFrame
    problems: pd.DataFrame


def _entity_key(entity: str) -> frozenset[str]:
    """Case- and order-free key of an entity: ``Il10rb_IL10RA`` ~ ``IL10RA_IL10RB``."""
    return frozenset(g.upper() for g in complex_subunits(entity))


def _problem(kind: str, axis: str, reason: str, **fields: object) -> dict:
    return {"kind": kind, "tissue": "", "sample": "", "cell_type": "", "n_cells": np.nan,
            "focus_axis": axis, "reason": reason, **fields}


def _match_symbols(axis: FocusAxis, side: str, names: Mapping[frozenset[str], str],
                   resource_name: str) -> tuple[list[str], list[dict]]:
    """The resource entities of an axis' ligands (or receptors) and the unknown symbols."""
    wanted = axis.ligands if side == "ligand" else axis.receptors
    found, problems = [], []
    for symbol in wanted:
        match = names.get(_entity_key(symbol))
        if match is not None:
            found.append(match)
            continue
        hints = difflib.get_close_matches(symbol, list(names.values()), n=3)
        problems.append(_problem(
            "focus_gene", axis.name,
            f"{side} {symbol!r} is not a {side} of resource {resource_name!r}"
            + (f" (did you mean {', '.join(map(repr, hints))}?)" if hints else "")
            + f"; the axis keeps its other {side}s. Fix the focus axis symbols (the "
            "resource's spelling, complexes joined by '_')."))
    return found, problems


def _pair_problem(axis: FocusAxis, ligand: str, receptor: str,
                  known: set[tuple[str, str]], present: set[str] | None,
                  resource_name: str) -> dict | None:
    """Why a ligand x receptor combination of an axis is not a focus pair (or None)."""
    if (ligand, receptor) not in known:
        return _problem("focus_pair", axis.name,
                        f"{ligand} -> {receptor} is not a pair of resource {resource_name!r}; "
                        "left out (the resource pairs each ligand with its own receptors)")
    missing = [] if present is None else [
        g for e in (ligand, receptor) for g in complex_subunits(e) if g not in present]
    if missing:
        return _problem("focus_gene", axis.name, f"{ligand} -> {receptor} cannot be scored: "
                        f"gene(s) {missing} are not in the data")
    return None


def resolve_focus(axes: Sequence[FocusAxis], resource: pd.DataFrame, resource_name: str,
                  genes: Iterable[str] | None = None) -> FocusPairs:
    """Match each axis' ligands and receptors to the resource (case and subunit order
    loose, so mouse defaults map onto the upper-case human resource) and list every
    ligand x receptor combination the resource holds as a focus pair (a pair two axes
    list counts for the first).

    Problems are local: an unknown symbol, a combination the resource lacks, an axis
    without any pair, a pair whose genes are not in the data (``genes``) are listed, the
    rest of the axes still count.
    """
    names = {side: {_entity_key(e): e for e in sorted(resource[side].unique())}
             for side in ("ligand", "receptor")}
    known = set(zip(resource["ligand"], resource["receptor"], strict=True))
    present = None if genes is None else {str(g) for g in genes}
    rows, problems = [], []
    for axis in axes:
        ligands, bad_ligands = _match_symbols(axis, "ligand", names["ligand"], resource_name)
        receptors, bad_receptors = _match_symbols(axis, "receptor", names["receptor"],
                                                  resource_name)
        problems += bad_ligands + bad_receptors
        n_before = len(rows)
        for ligand in ligands:
            for receptor in receptors:
                problem = _pair_problem(axis, ligand, receptor, known, present, resource_name)
                if problem:
                    problems.append(problem)
                    continue
                rows.append({"focus_axis": axis.name, "ligand": ligand, "receptor": receptor,
                             "response_set": axis.response_set or "",
                             "senders": tuple(axis.senders), "receivers": tuple(axis.receivers)})
        if len(rows) == n_before:
            problems.append(_problem(
                "focus_axis", axis.name,
                f"focus axis {axis.name!r} has no ligand-receptor pair of resource "
                f"{resource_name!r} in the data; it is not reported"))
    for p in problems:
        log.warning("communication focus: %s", p["reason"])
    pairs = pd.DataFrame(rows, columns=["focus_axis", "ligand", "receptor", "response_set",
                                        "senders", "receivers"])
    return FocusPairs(pairs.drop_duplicates(["ligand", "receptor"]).reset_index(drop=True),
                      pd.DataFrame(problems, columns=SKIPPED_COLUMNS))


# ------------------------------------------------------------------------- per sample


def read_sample_cells(h5ad: str | Path, sample: str) -> ad.AnnData | None:
    """The cells of ``sample`` from an annotated h5ad, read without loading the other
    samples (``X``, the obs columns liana and the tests need, var names); ``None`` when
    the file holds no cell of the sample (e.g. dropped by QC)."""
    return read_sample_rows(h5ad, sample, OBS_COLUMNS,
                            what="the communication stage (run the annotation first: "
                                 "results/annotate/annotated.h5ad has them)")


def _check_log_normalised(adata: ad.AnnData, sample: str) -> None:
    """liana needs log-normalised values; raw counts are all integers."""
    X = adata.X
    values = np.asarray(X.data if hasattr(X, "data") else X).ravel()[:10_000]
    if values.size and np.all(values == np.round(values)):
        raise InputDataError(
            f"sample {sample!r}: X holds integers only (raw counts?); the communication "
            "stage needs log-normalised X, as in results/annotate/annotated.h5ad")


def _check_coverage(var_names: Sequence[str], genes: Sequence[str], resource_name: str,
                    sample: str) -> None:
    """Stop when the data share (almost) no gene with the resource: wrong species."""
    shared = len(set(genes) & set(var_names))
    if shared < max(10, 0.02 * len(genes)):
        example = ", ".join(genes[:3])
        raise InputDataError(
            f"sample {sample!r}: only {shared} of the {len(genes)} genes of liana resource "
            f"{resource_name!r} (e.g. {example}) are among the data's gene names; the "
            "resource and the data are of different species or symbol styles. Check "
            "`species` in the sample sheet or set communication.resource.")


def _skipped_cell_types(n_cells: pd.Series, settings: CommunicationSettings, tissue: str,
                        sample: str) -> pd.DataFrame:
    """(sample, cell type) pairs left out of liana and the tests, with the reason."""
    rows = []
    for cell_type, n in n_cells.items():
        if cell_type in settings.exclude_cell_types:
            reason = "excluded by communication.exclude_cell_types"
        elif n < settings.min_cells:
            reason = (f"{n} cell(s) < communication.min_cells ({settings.min_cells}): not a "
                      "sender or receiver in this sample")
        else:
            continue
        rows.append({"kind": "cell_type", "tissue": tissue, "sample": sample,
                     "cell_type": cell_type, "n_cells": int(n), "focus_axis": "",
                     "reason": reason})
    return pd.DataFrame(rows, columns=SKIPPED_COLUMNS)


def cell_type_expression(adata: ad.AnnData, genes: Sequence[str], meta: Mapping[str, str]
                         ) -> pd.DataFrame:
    """Per cell type x gene: cells, mean of ``X`` and fraction of cells with ``X > 0``
    (scanpy's aggregate), with the ``meta`` columns (tissue, sample, condition)."""
    import scanpy as sc

    sub = adata[:, list(genes)]
    agg = sc.get.aggregate(sub, by="cell_type", func=["mean", "count_nonzero"])
    n_cells = adata.obs["cell_type"].value_counts().reindex(agg.obs_names).to_numpy()
    mean = pd.DataFrame(agg.layers["mean"], index=agg.obs_names, columns=agg.var_names)
    frac = pd.DataFrame(agg.layers["count_nonzero"] / n_cells[:, None], index=agg.obs_names,
                        columns=agg.var_names)
    long = mean.stack().rename("mean").to_frame().join(frac.stack().rename("frac"))
    long.index.names = ["cell_type", "gene"]
    long = long.reset_index()
    long["n_cells"] = long["cell_type"].map(dict(zip(agg.obs_names, n_cells, strict=True)))
    for key, value in meta.items():
        long[key] = value
    long = long.sort_values(["cell_type", "gene"], kind="mergesort")
    return long[EXPRESSION_COLUMNS].reset_index(drop=True)


def entity_table(expression: pd.DataFrame, entities: Iterable[str],
                 by: Sequence[str] = ("sample", "cell_type")) -> pd.DataFrame:
    """Mean and fraction of resource entities (genes or complexes, the minimum over the
    subunits) per ``by`` group, from the per-gene expression table; an entity with a
    subunit absent from the table is left out."""
    by = list(by)
    subunits = pd.DataFrame({"entity": sorted(set(entities))})
    subunits["gene"] = subunits["entity"].map(lambda e: sorted(set(complex_subunits(e))))
    subunits["n_subunits"] = subunits["gene"].map(len)
    subunits = subunits.explode("gene")
    merged = expression[[*by, "gene", "mean", "frac"]].merge(subunits, on="gene")
    out = merged.groupby([*by, "entity"], sort=True).agg(
        mean=("mean", "min"), frac=("frac", "min"), n_found=("gene", "size"),
        n_subunits=("n_subunits", "first"))
    out = out[out["n_found"] == out["n_subunits"]].reset_index()
    return out[[*by, "entity", "mean", "frac"]]


def _run_liana(adata: ad.AnnData, resource: pd.DataFrame, settings: CommunicationSettings,
               threads: int) -> pd.DataFrame:
    """liana's rank_aggregate on the cell types of one sample (log-normalised X)."""
    import liana

    genes = set(adata.var_names)
    usable = [all(g in genes for e in pair for g in complex_subunits(e))
              for pair in zip(resource["ligand"], resource["receptor"], strict=True)]
    with warnings.catch_warnings():  # liana 1.10's own pandas/anndata deprecation notices
        warnings.filterwarnings("ignore", category=FutureWarning, module="liana")
        warnings.filterwarnings("ignore", message=".*view, initializing view as actual")
        return liana.mt.rank_aggregate(  # liana drops the other pairs too, only slower
            adata, groupby="cell_type", resource=resource[usable],
            expr_prop=settings.expr_prop, min_cells=settings.min_cells, use_raw=False,
            n_perms=settings.n_perms, seed=settings.seed, n_jobs=threads, inplace=False,
            verbose=False)


def _with_props(table: pd.DataFrame, expression: pd.DataFrame) -> pd.DataFrame:
    """Add ligand/receptor fractions (complex = min over subunits) and ``lr_props``."""
    entities = set(table["ligand"]) | set(table["receptor"])
    frac = entity_table(expression, entities, by=["cell_type"]).set_index(
        ["cell_type", "entity"])["frac"]
    table["ligand_props"] = frac.reindex(pd.MultiIndex.from_arrays(
        [table["sender"], table["ligand"]])).to_numpy()
    table["receptor_props"] = frac.reindex(pd.MultiIndex.from_arrays(
        [table["receiver"], table["receptor"]])).to_numpy()
    table["lr_props"] = np.minimum(table["ligand_props"], table["receptor_props"])
    return table


def communication_sample(adata: ad.AnnData | None, resource: pd.DataFrame,
                         settings: CommunicationSettings, *, sample: str,
                         resource_name: str, threads: int = 1) -> dict[str, pd.DataFrame]:
    """liana on one sample's cells: ``{"liana", "expression", "skipped"}`` tables.

    ``adata`` holds the sample's cells (log-normalised ``X``; obs ``tissue``,
    ``condition``, ``cell_type``), or None when the sample has no annotated cells (then
    only ``skipped`` has a row). A sample with fewer than two usable cell types gets no
    liana table (listed in ``skipped``); its expression table still counts.
    """
    genes = resource_genes(resource)
    empty_expr = pd.DataFrame(columns=EXPRESSION_COLUMNS)
    if adata is None or adata.n_obs == 0:
        note = _problem("sample", "", "the sample has no annotated cells (dropped by QC?); "
                        "it is not in the communication tests", sample=sample)
        return {"liana": pd.DataFrame(columns=["sample", *KEYS]), "expression": empty_expr,
                "skipped": pd.DataFrame([note], columns=SKIPPED_COLUMNS)}
    _check_log_normalised(adata, sample)
    _check_coverage(list(adata.var_names), genes, resource_name, sample)
    meta = {"tissue": str(adata.obs["tissue"].iloc[0]), "sample": sample,
            "condition": str(adata.obs["condition"].iloc[0])}
    labels = adata.obs["cell_type"].astype(str)
    n_cells = labels.value_counts().sort_index()
    skipped = _skipped_cell_types(n_cells, settings, meta["tissue"], sample)
    kept = sorted(set(n_cells.index) - set(skipped["cell_type"]))
    cells = adata[labels.isin(kept).to_numpy()].copy()
    cells.obs["cell_type"] = pd.Categorical(cells.obs["cell_type"].astype(str),
                                            categories=kept)
    present = [g for g in genes if g in set(adata.var_names)]
    expression = cell_type_expression(cells, present, meta) if kept else empty_expr
    if len(kept) < 2:
        row = _problem("sample", "", f"{len(kept)} cell type(s) with >= "
                       f"{settings.min_cells} cells: liana needs two or more; no liana table",
                       tissue=meta["tissue"], sample=sample)
        skipped = pd.concat([skipped, pd.DataFrame([row], columns=SKIPPED_COLUMNS)])
        return {"liana": pd.DataFrame(columns=["sample", *KEYS]), "expression": expression,
                "skipped": skipped.reset_index(drop=True)}
    table = _run_liana(cells, resource, settings, threads)
    table = table.rename(columns={"source": "sender", "target": "receiver",
                                  "ligand_complex": "ligand", "receptor_complex": "receptor"})
    table = _with_props(table, expression)
    rank = "magnitude_rank" if "magnitude_rank" in table.columns else "lr_means"
    table = table.sort_values([rank, *KEYS], kind="mergesort").reset_index(drop=True)
    for key in ("condition", "tissue", "sample"):
        table.insert(0, key, meta[key])
    log.info("sample %s: %d cell types, %d interactions expressed (liana), %d left out",
             sample, len(kept), len(table), len(skipped))
    return {"liana": table, "expression": expression, "skipped": skipped}


def communication_sample_stage(h5ad: str | Path, sample: str, species: str,
                               settings: Mapping, *, seed: int, threads: int = 1
                               ) -> dict[str, pd.DataFrame]:
    """Rule communication_sample: the sample's cells from ``h5ad``, liana's resource of
    the run, then :func:`communication_sample` (outputs ``liana``, ``expression``,
    ``skipped``)."""

    st = CommunicationSettings.from_config(settings, seed=seed)
    name = st.resource_for(species)
    resource = load_resource(name)
    log.info("liana resource %s: %d interactions", name, len(resource))
    with job.timed("read sample"):
        adata = read_sample_cells(h5ad, sample)
    with job.timed("liana"):
        return communication_sample(adata, resource, st, sample=sample, resource_name=name,
                                    threads=threads)
