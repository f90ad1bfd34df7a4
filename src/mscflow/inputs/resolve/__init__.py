"""Resolve a preset's public record to the sample sheet a run uses.

``records(spec, cache)`` reads the record named by ``spec["source"]`` (GEO series,
ArrayExpress study, CELLxGENE collection, or the explicit entries of a ``files`` preset)
and :func:`mscflow.inputs.resolve.mapping.sheet_rows` maps its samples to sheet rows.
:mod:`mscflow.inputs.presets` calls both while Snakemake parses the workflow and writes the sheet
into ``results/preset/<name>/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mscflow.inputs.resolve.arrayexpress import arrayexpress_records
from mscflow.inputs.resolve.base import PresetError, RecordCache, RecordFile, RecordSample
from mscflow.inputs.resolve.cellxgene import cellxgene_records
from mscflow.inputs.resolve.geo import geo_records
from mscflow.inputs.resolve.mapping import explicit_records, sheet_rows

__all__ = ["PresetError", "RecordCache", "RecordFile", "RecordSample", "describe",
           "records", "sheet_rows"]

RESOLVERS = {"geo": geo_records, "arrayexpress": arrayexpress_records,
             "cellxgene": cellxgene_records}


def describe(source: Mapping[str, Any]) -> str:
    """The record in words, e.g. ``GEO GSE136103``."""
    kind = source["type"]
    if kind == "cellxgene":
        return f"CELLxGENE collection {source['collection']}"
    if kind == "files":
        return "listed files"
    return f"{'GEO' if kind == 'geo' else 'ArrayExpress'} {source['accession']}"


def records(spec: Mapping[str, Any], cache: RecordCache, where: str) -> list[RecordSample]:
    """The samples of the preset's record, with their files."""
    source = spec["source"]
    if source["type"] == "files":
        return explicit_records(source, spec.get("samples", []), where)
    return RESOLVERS[source["type"]](source, cache)
