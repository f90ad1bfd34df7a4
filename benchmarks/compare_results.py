"""Compare the result tables of two runs of the workflow, table by table.

    python benchmarks/compare_results.py RUN_A RUN_B [--moved OLD=NEW ...]

RUN_A and RUN_B are working directories (each with ``results/``). Every ``.tsv``,
``.tsv.gz`` and ``.parquet`` file under ``results/`` is read as a table and compared exactly
(values, dtypes as read, row and column order). ``--moved`` maps a path of RUN_A to its
path in RUN_B (a table that moved). Prints one line per table, ``identical`` or what
differs, and exits 1 when any table differs or exists in one run only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

SUFFIXES = (".tsv", ".tsv.gz", ".parquet")


def read_table(path: Path) -> pd.DataFrame:
    """A result table as pandas reads it (TSV as text-preserving as possible)."""
    if path.name.endswith(".parquet"):
        return pd.read_parquet(path)
    return pd.read_csv(path, sep="\t", low_memory=False)


def tables(root: Path) -> list[str]:
    """Paths of the result tables under ``root/results``, relative to ``root``."""
    found = [p for p in (root / "results").rglob("*") if p.is_file()
             and p.name.endswith(SUFFIXES) and not p.name.startswith(".")]
    return sorted(str(p.relative_to(root)) for p in found)


def difference(a: pd.DataFrame, b: pd.DataFrame) -> str | None:
    """What differs between two tables, or None when they are identical."""
    notes = []
    if list(a.columns) != list(b.columns):
        only_a = [c for c in a.columns if c not in b.columns]
        only_b = [c for c in b.columns if c not in a.columns]
        notes.append(f"columns only in A {only_a}, only in B {only_b}"
                     if only_a or only_b else "column order differs")
    if a.shape[0] != b.shape[0]:
        return "; ".join([*notes, f"rows {a.shape[0]} vs {b.shape[0]}"])
    for col in [c for c in a.columns if c in b.columns]:
        x, y = a[col], b[col]
        if x.equals(y):
            continue
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
            diff = np.nanmax(np.abs(x.to_numpy(float) - y.to_numpy(float))) \
                if len(x) else 0.0
            nan_diff = int((x.isna() != y.isna()).sum())
            notes.append(f"{col}: max |diff| {diff:.3g}, NaN mismatches {nan_diff}")
        else:
            notes.append(f"{col}: {int((x.astype(str) != y.astype(str)).sum())} values differ")
    if not notes and not a.index.equals(b.index):
        notes.append("index differs")
    return "; ".join(notes) or None


def main(argv: list[str] | None = None) -> int:
    """Compare two runs; print one line per table; exit 1 on any difference."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--moved", action="append", default=[], metavar="OLD=NEW",
                        help="a table of RUN_A found at another path in RUN_B")
    args = parser.parse_args(argv)
    moved = dict(m.split("=", 1) for m in args.moved)
    in_a, in_b = tables(args.run_a), set(tables(args.run_b))
    failed = False
    seen_b = set()
    for rel in in_a:
        rel_b = moved.get(rel, rel)
        if rel_b not in in_b:
            print(f"only in A: {rel}")
            failed = True
            continue
        seen_b.add(rel_b)
        note = difference(read_table(args.run_a / rel), read_table(args.run_b / rel_b))
        label = rel if rel == rel_b else f"{rel} -> {rel_b}"
        print(f"{'identical' if note is None else 'DIFFERS'}: {label}"
              + ("" if note is None else f": {note}"))
        failed |= note is not None
    for rel in sorted(in_b - seen_b):
        print(f"only in B: {rel}")
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
