"""The ``mscflow`` command (installed by ``pip install -e .``).

``mscflow samplesheet FILE --sample-key KEY ... -o config/samples.tsv`` writes the sample
sheet of an h5ad or loom file holding several samples (the CELLxGENE Discover layout, most
GEO h5ad deposits): one row per distinct value of the sample column(s), each taking its
cells with ``obs_filter``. Only the obs columns it needs are read, never the matrix.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from mscflow.config import nearest_key
from mscflow.errors import MscflowError, SampleSheetError
from mscflow.inputs.matrixfiles import open_matrix_file, read_options_problem
from mscflow.inputs.readers import parse_keep_obs, symbol_styles
from mscflow.inputs.samplesheet import check_sample_files, check_samples, read_sample_sheet
from mscflow.io import write_table_atomic

SHEET_COLUMNS = ["sample", "tissue", "condition", "replicate", "species", "path", "format",
                 "layer", "obs_filter", "var_symbols", "keep_obs"]


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (".h5ad", ".loom"):
        raise SampleSheetError(f"'{path}' is neither .h5ad nor .loom; `mscflow samplesheet` "
                               "writes sheets for h5ad and loom files holding several samples.")
    return suffix[1:]


def _column(obs_columns: Sequence[str], key: str, option: str, path: Path) -> str:
    """``key`` if it is an obs column, else an error listing the columns (and a near one)."""
    if key in obs_columns:
        return key

    near = nearest_key(key, list(obs_columns))
    raise SampleSheetError(
        f"{option} {key!r}: no such obs column in '{path}'"
        + (f" (did you mean '{near}'?)" if near else "")
        + f". Available columns: {', '.join(obs_columns) or '(none)'}."
    )


def safe_id(value: str, allowed: str = "A-Za-z0-9_.-") -> str:
    """A sample id (letters, digits, ``_ . -``) or, with ``allowed="A-Za-z0-9_-"``, a
    tissue word made from an obs value."""
    text = re.sub(f"[^{allowed}]+", "_", str(value)).strip("_.-")
    text = re.sub(r"\.{2,}", ".", text)
    return text[:100] or "sample"


def _check_filter_values(obs: pd.DataFrame, keys: list[str]) -> None:
    """Sample values must survive ``column=value;...`` unchanged."""
    for key in keys:
        bad = [v for v in obs[key].unique() if ";" in v or v != v.strip() or not v]
        if bad:
            raise SampleSheetError(
                f"--sample-key {key!r}: value(s) {bad[:3]} cannot be written in obs_filter "
                "(empty, ';' inside, or spaces around); use another column.")


def _constant_per_sample(obs: pd.DataFrame, keys: list[str], column: str, option: str
                         ) -> pd.Series:
    """The one value of ``column`` per sample; an error names a sample with several."""
    values = obs.groupby(keys, observed=True, sort=False)[column].agg(lambda s: sorted(set(s)))
    mixed = values[values.map(len) > 1]
    if len(mixed):
        key, found = next(iter(mixed.items()))
        raise SampleSheetError(
            f"{option} {column!r}: sample {key!r} has several values ({', '.join(found)}); "
            f"a sample needs one. Add {column!r} to --sample-key to split it, or use "
            "another column."
        )
    return values.map(lambda v: v[0])


def _guess_species(source: object, layer: str, var_symbols: str) -> str:
    names = source.var_column(layer, var_symbols) if var_symbols else source.var_names(layer)
    styles = symbol_styles(str(n) for n in names)
    mouse, human = len(styles["mouse"]), len(styles["human"])
    if max(mouse, human) < 20 or min(mouse, human) > 0.25 * max(mouse, human):
        raise SampleSheetError("could not tell the species from the gene names; give "
                               "--species mouse or --species human.")
    return "mouse" if mouse > human else "human"


def build_sheet(path: str | Path, *, sample_keys: Sequence[str], condition_key: str = "",
                condition: str = "control", tissue_key: str = "", tissue: str = "",
                replicate_key: str = "", species: str = "", layer: str = "",
                var_symbols: str = "", keep_obs: Sequence[str] = ()) -> pd.DataFrame:
    """The sample sheet of a multi-sample h5ad/loom file: one row per distinct value of
    ``sample_keys`` (cells without one are left out), ``obs_filter`` selecting its cells.
    Tissue, condition and replicate come from obs columns (one value per sample) or are
    given; the species is guessed from the gene names when not given. Raises
    :class:`SampleSheetError` naming a wrong column and listing the available ones."""

    path = Path(path)
    if not path.is_file():
        raise SampleSheetError(f"'{path}' does not exist.")
    fmt = _format_of(path)
    with open_matrix_file(path, fmt) as source:
        columns = source.obs_columns
        keys = [_column(columns, k, "--sample-key", path) for k in sample_keys]
        wanted = {"--condition-key": condition_key, "--tissue-key": tissue_key,
                  "--replicate-key": replicate_key}
        named = {opt: _column(columns, k, opt, path) for opt, k in wanted.items() if k}
        if not tissue and "--tissue-key" not in named:
            raise SampleSheetError(
                f"give --tissue-key COLUMN (obs columns of '{path}': {', '.join(columns)}) "
                "or --tissue NAME (e.g. lung, liver).")
        keep = parse_keep_obs(list(keep_obs))
        for column in keep:
            _column(columns, column, "--keep-obs", path)
        problem = read_options_problem(source, layer=layer, obs_filter=[],
                                       var_symbols=var_symbols, keep_obs=keep)
        if problem:
            raise SampleSheetError(problem)
        species = species or _guess_species(source, layer, var_symbols)
        obs = pd.DataFrame({c: pd.Series(source.obs_column(c)).astype(object)
                            for c in dict.fromkeys([*keys, *named.values()])})
    unlabelled = obs[keys].isna().any(axis=1)
    if unlabelled.all():
        raise SampleSheetError(f"--sample-key {' '.join(keys)}: no cell of '{path}' has a "
                               "value; choose another column.")
    obs = obs[~unlabelled].astype(str)
    _check_filter_values(obs, keys)
    groups = obs.groupby(keys, sort=True, observed=True)
    rows = pd.DataFrame({"n_cells": groups.size()})
    for option, column in named.items():
        rows[option] = _constant_per_sample(obs, keys, column, option)
    rows = rows.reset_index()
    rows["sample"] = rows[keys].astype(str).agg("_".join, axis=1).map(safe_id)
    repeated = rows["sample"][rows["sample"].duplicated()].tolist()
    if repeated:
        raise SampleSheetError(f"sample values give the same id {repeated} once made safe "
                               "for file names; use another --sample-key.")
    word = "A-Za-z0-9_-"  # the sheet's tissue alphabet
    rows["tissue"] = (rows["--tissue-key"].map(lambda t: safe_id(t, word))
                      if "--tissue-key" in named else safe_id(tissue, word))
    rows["condition"] = rows["--condition-key"] if "--condition-key" in named else condition
    if "--replicate-key" in named:
        rows["replicate"] = rows["--replicate-key"]
    else:
        rows["replicate"] = rows.groupby(["tissue", "condition"]).cumcount() + 1
    sheet = pd.DataFrame({
        "sample": rows["sample"], "tissue": rows["tissue"], "condition": rows["condition"],
        "replicate": rows["replicate"].astype(str), "species": species, "path": str(path),
        "format": fmt, "layer": layer,
        "obs_filter": rows[keys].apply(lambda r: ";".join(f"{k}={r[k]}" for k in keys),
                                       axis=1),
        "var_symbols": var_symbols, "keep_obs": ",".join(keep),
    }, columns=SHEET_COLUMNS)
    sheet.attrs["n_cells"] = dict(zip(sheet["sample"], rows["n_cells"], strict=True))
    sheet.attrs["n_unlabelled"] = int(unlabelled.sum())
    return sheet


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mscflow", description="mscflow helpers (the "
                                     "workflow itself runs with snakemake).")
    commands = parser.add_subparsers(dest="command", required=True)
    sheet = commands.add_parser(
        "samplesheet", help="write the sample sheet of an h5ad/loom file holding several "
        "samples", description=build_sheet.__doc__)
    sheet.add_argument("file", type=Path, help="the .h5ad or .loom file")
    sheet.add_argument("--sample-key", nargs="+", required=True, metavar="KEY",
                       help="obs column(s) whose distinct values are the samples (e.g. "
                       "donor_id; several: one sample per combination)")
    sheet.add_argument("--condition-key", default="", metavar="K",
                       help="obs column with the condition (one value per sample)")
    sheet.add_argument("--condition", default="control",
                       help="condition of every sample without --condition-key")
    sheet.add_argument("--tissue-key", default="", metavar="K",
                       help="obs column with the tissue (one value per sample)")
    sheet.add_argument("--tissue", default="", help="tissue of every sample (e.g. lung)")
    sheet.add_argument("--replicate-key", default="", metavar="K",
                       help="obs column with the replicate id (default: 1, 2, ... per "
                       "tissue and condition)")
    sheet.add_argument("--species", choices=("mouse", "human"), default="",
                       help="default: guessed from the gene names")
    sheet.add_argument("--layer", default="",
                       help="where the counts are: raw (.raw.X), a layer name, or empty (X)")
    sheet.add_argument("--var-symbols", default="", metavar="COL",
                       help="var column with gene symbols when var_names are ids "
                       "(CELLxGENE: feature_name)")
    sheet.add_argument("--keep-obs", nargs="*", default=[], metavar="COL",
                       help="obs columns carried into the results as published_<COL> (e.g. "
                       "cell_type: compared with mscflow's labels)")
    sheet.add_argument("-o", "--output", type=Path, required=True,
                       help="the sheet to write, e.g. config/samples.tsv")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mscflow`` command; user errors print one line and return 1."""
    args = _parser().parse_args(argv)
    check = args.output.with_name(f".{args.output.name}.check.tsv")
    try:
        sheet = build_sheet(
            args.file, sample_keys=args.sample_key, condition_key=args.condition_key,
            condition=args.condition, tissue_key=args.tissue_key, tissue=args.tissue,
            replicate_key=args.replicate_key, species=args.species, layer=args.layer,
            var_symbols=args.var_symbols, keep_obs=args.keep_obs)
        write_table_atomic(sheet, check)  # checked as the workflow will, then put in place
        written = read_sample_sheet(check)
        check_samples(written, sheet_path=str(check))
        check_sample_files(written, sheet_path=str(check))
        check.replace(args.output)
    except MscflowError as err:
        print(f"mscflow samplesheet: {err}", file=sys.stderr)
        return 1
    finally:
        check.unlink(missing_ok=True)
    cells = sheet.attrs["n_cells"]
    print(f"wrote {args.output}: {len(sheet)} samples, {sum(cells.values()):,} cells "
          f"(smallest {min(cells, key=cells.get)}: {min(cells.values()):,})")
    if sheet.attrs["n_unlabelled"]:
        print(f"{sheet.attrs['n_unlabelled']:,} cells without a sample value are left out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
