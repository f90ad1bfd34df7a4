"""Gene-set library: GMT reading/writing, symbol synonyms, mouse<->human orthologs, matching.

A gene set is a mapping ``gene -> weight`` (weight 1.0 unless the GMT says otherwise).
GMT lines are ``name<TAB>description<TAB>gene1<TAB>gene2...``; a gene may carry a weight
as ``gene,weight`` (e.g. ``Marco,2``).

Cross-species use always goes through the shipped ortholog table (never by changing the
case of a symbol); old symbols still found in public data (``Chi3l3``, ``Emr1``...) are
resolved through the shipped synonym table, and every rename is reported.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mscflow.config import Settings, nearest_key, settings_section
from mscflow.errors import ConfigError, InputDataError

log = logging.getLogger(__name__)

SPECIES = ("mouse", "human")
GeneSet = dict[str, float]
REPORT_COLUMNS = [
    "set", "n_genes", "n_found", "frac_found", "found", "missing", "renamed", "orthologs",
    "no_ortholog", "status", "reason",
]
# What happens to a set with fewer than genesets.min_genes genes in the data.
ON_TOO_FEW = ("drop", "stop")
_IG_GENE = re.compile(r"^IG[HKL][A-Z0-9-]*$")


# --------------------------------------------------------------------------------------
# GMT files
# --------------------------------------------------------------------------------------
def _parse_gene_token(token: str, path: str | Path, lineno: int) -> tuple[str, float]:
    """Split ``gene`` or ``gene,weight`` into (gene, weight)."""
    gene, sep, weight = token.strip().partition(",")
    gene = gene.strip()
    if not gene:
        raise ValueError(f"{path}:{lineno}: empty gene symbol in token {token!r}")
    if not sep:
        return gene, 1.0
    try:
        value = float(weight)
    except ValueError:
        raise ValueError(
            f"{path}:{lineno}: weight of gene {gene!r} is {weight!r}, not a number; "
            "write weights as 'gene,1.5'"
        ) from None
    if not math.isfinite(value):
        raise ValueError(f"{path}:{lineno}: weight of gene {gene!r} must be finite")
    return gene, value


def read_gmt(path: str | Path) -> dict[str, GeneSet]:
    """Read a GMT file into ``{set name: {gene: weight}}``, validating every line.

    Raises ValueError naming the file and line for lines with fewer than three fields,
    empty names, duplicate set names, sets without genes and genes listed twice.
    Blank lines and lines starting with ``#`` are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"gene-set file not found: {path}")
    sets: dict[str, GeneSet] = {}
    first_line: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for lineno, raw in enumerate(handle, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip() or line.startswith("#"):
                continue
            fields = line.split("\t")
            if len(fields) == 1:
                raise ValueError(
                    f"{path}:{lineno}: no tab found; a GMT line is "
                    "name<TAB>description<TAB>gene1<TAB>gene2... (tab-separated, not spaces)"
                )
            name = fields[0].strip()
            if not name:
                raise ValueError(f"{path}:{lineno}: empty gene-set name")
            if len(fields) < 3 or not any(f.strip() for f in fields[2:]):
                raise ValueError(
                    f"{path}:{lineno}: gene set {name!r} has no genes; a GMT line is "
                    "name<TAB>description<TAB>gene1<TAB>gene2... (tab-separated)"
                )
            if name in sets:
                raise ValueError(
                    f"{path}:{lineno}: duplicate gene-set name {name!r} (first on line "
                    f"{first_line[name]}); set names must be unique"
                )
            genes: GeneSet = {}
            for token in fields[2:]:
                if not token.strip():
                    continue
                gene, weight = _parse_gene_token(token, path, lineno)
                if gene in genes:
                    raise ValueError(
                        f"{path}:{lineno}: gene {gene!r} listed twice in set {name!r}"
                    )
                genes[gene] = weight
            sets[name] = genes
            first_line[name] = lineno
    if not sets:
        raise ValueError(f"{path}: no gene sets found (empty GMT file)")
    return sets


def read_gmt_descriptions(path: str | Path) -> dict[str, str]:
    """Return ``{set name: description}`` from a GMT file (second column)."""
    out: dict[str, str] = {}
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        if raw.strip() and not raw.startswith("#"):
            fields = raw.split("\t")
            out[fields[0].strip()] = fields[1].strip() if len(fields) > 1 else ""
    return out


def write_gmt(
    gene_sets: Mapping[str, Mapping[str, float] | Sequence[str]],
    path: str | Path,
    descriptions: Mapping[str, str] | None = None,
) -> None:
    """Write gene sets to a GMT file; weights other than 1 are written as ``gene,weight``."""
    lines = []
    for name, genes in gene_sets.items():
        weights = as_weights(genes)
        tokens = [g if w == 1.0 else f"{g},{w:g}" for g, w in weights.items()]
        desc = (descriptions or {}).get(name, "")
        lines.append("\t".join([name, desc, *tokens]))
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def as_weights(genes: Mapping[str, float] | Sequence[str]) -> GeneSet:
    """Normalise a gene list or ``{gene: weight}`` mapping to ``{gene: weight}``."""
    if isinstance(genes, Mapping):
        return {str(g): float(w) for g, w in genes.items()}
    if isinstance(genes, str):
        raise TypeError(f"a gene set must be a list of genes, not the string {genes!r}")
    return {str(g): 1.0 for g in genes}


def load_gene_sets(paths: Iterable[str | Path]) -> dict[str, GeneSet]:
    """Read several GMT files into one dict; a set name used in two files is an error."""
    merged: dict[str, GeneSet] = {}
    origin: dict[str, Path] = {}
    for path in paths:
        for name, genes in read_gmt(path).items():
            if name in merged:
                raise ValueError(
                    f"gene-set name {name!r} is defined in both {origin[name]} and {path}; "
                    "set names must be unique across all GMT files: rename one of them"
                )
            merged[name] = genes
            origin[name] = Path(path)
    return merged


def drop_immunoglobulin_genes(genes: Iterable[str]) -> list[str]:
    """Drop human immunoglobulin genes (IGH*, IGK*, IGL*) from a gene list, keeping order."""
    return [g for g in genes if not _IG_GENE.match(g)]


# --------------------------------------------------------------------------------------
# Reference tables
# --------------------------------------------------------------------------------------
def _check_species(species: str, what: str) -> str:
    if species not in SPECIES:
        raise ValueError(f"{what} must be one of {SPECIES}, got {species!r}")
    return species


def read_orthologs(path: str | Path) -> pd.DataFrame:
    """Read the shipped ortholog table (columns mouse, human, support)."""
    table = pd.read_csv(path, sep="\t", dtype={"mouse": str, "human": str})
    missing = {"mouse", "human", "support"} - set(table.columns)
    if missing:
        raise ValueError(
            f"{path}: ortholog table lacks column(s) {sorted(missing)}; rebuild it with "
            "workflow/scripts/build_orthologs.py"
        )
    return table


def read_synonyms(path: str | Path) -> pd.DataFrame:
    """Read the synonym table (columns species, old_symbol, symbol, source)."""
    table = pd.read_csv(path, sep="\t", dtype=str, comment="#")
    missing = {"species", "old_symbol", "symbol"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: synonym table lacks column(s) {sorted(missing)}")
    dup = table.duplicated(["species", "old_symbol"], keep=False)
    if dup.any():
        raise ValueError(
            f"{path}: old symbol(s) listed twice: "
            f"{sorted(table.loc[dup, 'old_symbol'].unique())}"
        )
    return table


def read_symbols(path: str | Path) -> set[str]:
    """Read a one-symbol-per-line list (optionally gzipped) into a set."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return {line.strip() for line in handle if line.strip()}


def select_ortholog_pairs(hcop: pd.DataFrame, min_support: int = 3) -> pd.DataFrame:
    """Keep HCOP mouse-human pairs backed by >= ``min_support`` sources or an exact match.

    ``hcop`` needs columns mouse, human, sources (comma-separated resource names).
    An exact match is a human symbol equal to the upper-cased mouse symbol (used only to
    *select* pairs the resources already propose, never to invent one). Returns columns
    mouse, human, support (number of sources), sorted by mouse then human.
    """
    t = hcop.loc[:, ["mouse", "human", "sources"]].dropna()
    t = t[(t["mouse"] != "-") & (t["human"] != "-")]
    t = t.assign(support=t["sources"].str.split(",").map(lambda s: len(set(s))))
    t = t.groupby(["mouse", "human"], as_index=False)["support"].max()
    exact = t["mouse"].str.upper() == t["human"]
    kept = t[(t["support"] >= min_support) | exact]
    return kept.sort_values(["mouse", "human"]).reset_index(drop=True)


# --------------------------------------------------------------------------------------
# Orthologs
# --------------------------------------------------------------------------------------
def ortholog_lookup(
    orthologs: pd.DataFrame, from_species: str, to_species: str
) -> tuple[dict[str, str], dict[str, str]]:
    """Build the gene -> ortholog lookup used to translate sets between species.

    A gene maps to its partner when the pair is one-to-one in the table, or when exactly
    one of its partners has the same symbol up to case (e.g. CD14 -> Cd14 beside other
    candidates). Returns ``(mapping, ambiguous)`` where ``ambiguous`` gives, for genes
    with several partners and no such match, a reason naming the candidates.
    """
    src = _check_species(from_species, "from_species")
    dst = _check_species(to_species, "to_species")
    if src == dst:
        raise ValueError("from_species and to_species are the same: nothing to map")
    pairs = orthologs.loc[:, [src, dst]].dropna().drop_duplicates()
    partners = pairs.groupby(src)[dst].agg(list)
    back = pairs.groupby(dst)[src].agg(list)
    mapping: dict[str, str] = {}
    ambiguous: dict[str, str] = {}
    for gene, targets in partners.items():
        exact = [t for t in targets if t.upper() == gene.upper()]
        if len(exact) == 1:
            mapping[gene] = exact[0]
        elif len(targets) == 1 and len(back[targets[0]]) == 1:
            mapping[gene] = targets[0]
        else:
            others = sorted(set(back[targets[0]]) - {gene}) if len(targets) == 1 else []
            reason = (
                f"one of several {src} genes for {targets[0]} ({', '.join(others)})"
                if others else f"several {dst} candidates: {', '.join(sorted(targets))}"
            )
            ambiguous[gene] = reason
    return mapping, ambiguous


def map_gene_sets(
    gene_sets: Mapping[str, Mapping[str, float] | Sequence[str]],
    from_species: str,
    to_species: str,
    orthologs: pd.DataFrame,
) -> tuple[dict[str, GeneSet], pd.DataFrame]:
    """Translate gene sets between mouse and human through the ortholog table.

    Returns ``(mapped, report)``; ``report`` has one row per input gene with columns
    set, gene, ortholog (empty when unmapped) and status (``mapped``, ``ambiguous: ...``
    or ``no ortholog in table``). Weights follow their gene; if two genes map to the same
    ortholog the first one's weight is kept.
    """
    mapping, ambiguous = ortholog_lookup(orthologs, from_species, to_species)
    mapped: dict[str, GeneSet] = {}
    rows = []
    for name, genes in gene_sets.items():
        out: GeneSet = {}
        for gene, weight in as_weights(genes).items():
            target = mapping.get(gene)
            if target is not None:
                out.setdefault(target, weight)
                status = "mapped"
            elif gene in ambiguous:
                status = f"ambiguous: {ambiguous[gene]}"
            else:
                status = "no ortholog in table"
            rows.append({"set": name, "gene": gene, "ortholog": target or "", "status": status})
        mapped[name] = out
    return mapped, pd.DataFrame(rows, columns=["set", "gene", "ortholog", "status"])


# --------------------------------------------------------------------------------------
# Synonyms
# --------------------------------------------------------------------------------------
def synonym_groups(synonyms: pd.DataFrame | None, species: str) -> dict[str, list[str]]:
    """Map every symbol (current or old) of ``species`` to all its aliases, current first."""
    if synonyms is None or synonyms.empty:
        return {}
    sub = synonyms[synonyms["species"] == _check_species(species, "species")]
    groups: dict[str, list[str]] = {}
    for current, olds in sub.groupby("symbol")["old_symbol"]:
        members = [current, *sorted(olds)]
        for member in members:
            groups[member] = members
    return groups


def resolve_synonyms(
    genes: Iterable[str],
    var_names: Iterable[str],
    synonyms: pd.DataFrame | None,
    species: str,
) -> tuple[dict[str, str], dict[str, str]]:
    """Find each gene in ``var_names``, directly or through a synonym (old <-> current).

    Returns ``(found, renamed)``: ``found`` maps a gene to the name it has in the data;
    ``renamed`` holds only the genes found under another symbol. Genes absent under every
    alias are left out of both.
    """
    present = set(var_names)
    groups = synonym_groups(synonyms, species)
    found: dict[str, str] = {}
    renamed: dict[str, str] = {}
    for gene in genes:
        if gene in present:
            found[gene] = gene
            continue
        alias = next((a for a in groups.get(gene, []) if a != gene and a in present), None)
        if alias is not None:
            found[gene] = alias
            renamed[gene] = alias
    return found, renamed


# --------------------------------------------------------------------------------------
# Matching sets to the data
# --------------------------------------------------------------------------------------
def _join(items: Iterable[str]) -> str:
    return ",".join(items)


def match_gene_sets(
    gene_sets: Mapping[str, Mapping[str, float] | Sequence[str]],
    var_names: Iterable[str],
    *,
    set_species: str,
    data_species: str,
    min_genes: int = 3,
    orthologs: pd.DataFrame | None = None,
    synonyms: pd.DataFrame | None = None,
    on_too_few: str = "stop",
) -> tuple[dict[str, list[str] | GeneSet], pd.DataFrame]:
    """Check every set against the data's genes: translate, resolve synonyms, report.

    Sets of another species are translated through ``orthologs`` (required then).
    Returns ``(matched, report)``: ``matched`` gives each set's genes as named in the
    data (a list, or ``{gene: weight}`` when the set has weights other than 1); the report
    has one row per set with columns ``REPORT_COLUMNS`` (lists joined by commas; renamed
    as ``old->new``, orthologs as ``source->target``; ``status`` kept or dropped with its
    ``reason``). A set with fewer than ``min_genes`` genes found is left out of
    ``matched`` with a warning (``on_too_few="drop"``, e.g. a panel of a few thousand
    genes) or raises :class:`~mscflow.errors.ConfigError` naming every such set
    (``"stop"``).
    """
    if on_too_few not in ON_TOO_FEW:
        raise ValueError(f"on_too_few must be one of {ON_TOO_FEW}, not {on_too_few!r}")
    _check_species(set_species, "set_species")
    _check_species(data_species, "data_species")
    present = list(dict.fromkeys(var_names))
    ortho_map: dict[str, str] = {}
    if set_species != data_species:
        if orthologs is None:
            raise ValueError(
                f"gene sets are {set_species} but the data are {data_species}: pass the "
                "ortholog table (resources/orthologs/mouse_human_hcop.tsv.gz)"
            )
        ortho_map, _ = ortholog_lookup(orthologs, set_species, data_species)
    matched: dict[str, list[str] | GeneSet] = {}
    rows = []
    for name, genes in gene_sets.items():
        weights = as_weights(genes)
        translated: dict[str, str] = {}  # set gene -> gene in data species
        no_ortholog = []
        for gene in weights:
            if set_species == data_species:
                translated[gene] = gene
            elif gene in ortho_map:
                translated[gene] = ortho_map[gene]
            else:
                no_ortholog.append(gene)
        found, renamed = resolve_synonyms(translated.values(), present, synonyms, data_species)
        hits: GeneSet = {}
        for gene, target in translated.items():
            if target in found:
                hits.setdefault(found[target], weights[gene])
        missing = [g for g in weights if translated.get(g) not in found]
        matched[name] = hits if any(w != 1.0 for w in hits.values()) else list(hits)
        rows.append({
            "set": name,
            "n_genes": len(weights),
            "n_found": len(hits),
            "frac_found": round(len(hits) / len(weights), 3) if weights else 0.0,
            "found": _join(hits),
            "missing": _join(missing),
            "renamed": _join(f"{old}->{new}" for old, new in renamed.items()),
            "orthologs": _join(
                f"{g}->{t}" for g, t in translated.items() if g != t and t in found
            ),
            "no_ortholog": _join(no_ortholog),
            "status": "kept",
            "reason": "",
        })
    report = pd.DataFrame(rows, columns=REPORT_COLUMNS)
    too_small = report[report["n_found"] < min_genes]
    if too_small.empty:
        return matched, report
    if on_too_few == "stop":
        details = "; ".join(
            f"{r.set!r}: {r.n_found} of {r.n_genes} found"
            + (f" (missing: {r.missing})" if r.missing else "")
            for r in too_small.itertuples()
        )
        raise ConfigError(
            f"{len(too_small)} gene set(s) have fewer than genesets.min_genes={min_genes} "
            f"genes in the {data_species} data: {details}. Fix: check the set's species "
            f"(sets are read as {set_species}), correct the symbols in its GMT file, "
            "lower genesets.min_genes in the config, or set genesets.on_too_few: drop to "
            "leave such sets out (genesets.on_too_few is stop)."
        )
    for row in too_small.itertuples():
        reason = (f"{row.n_found} of {row.n_genes} genes in the data, fewer than "
                  f"genesets.min_genes={min_genes}")
        report.loc[row.Index, ["status", "reason"]] = ["dropped", reason]
        matched.pop(row.set)
        log.warning("gene set %r dropped: %s (genesets.on_too_few: drop)", row.set, reason)
    return matched, report


def check_symbols(
    gene_sets: Mapping[str, Mapping[str, float] | Sequence[str]], universe: set[str]
) -> dict[str, list[str]]:
    """Return ``{set: [genes not in universe]}`` for sets with unknown symbols."""
    bad = {}
    for name, genes in gene_sets.items():
        unknown = [g for g in as_weights(genes) if g not in universe]
        if unknown:
            bad[name] = unknown
    return bad


# --------------------------------------------------------------------------------------
# the run's gene-set library: every GMT matched to the data once
# --------------------------------------------------------------------------------------
LIBRARY_KINDS = ("programme", "marker")


@dataclass
class GeneSetLibrary:
    """The gene sets of one run, matched to the data's gene names once.

    ``programmes`` are scored per cell, tested between conditions (score shifts, GSEA) and
    plotted; ``markers`` drive the annotation. Each set maps the genes as named in the
    data to their weights, in GMT order. ``report`` has one row per set: ``kind``, ``gmt``
    and :data:`REPORT_COLUMNS`. ``dropped`` gives, per kind, the sets left out for too few
    genes in the data and why (``genesets.on_too_few: drop``).
    """

    species: str
    programmes: dict[str, GeneSet]
    markers: dict[str, GeneSet]
    report: pd.DataFrame
    dropped: dict[str, dict[str, str]] = field(default_factory=dict)

    @staticmethod
    def _as_input(sets: Mapping[str, GeneSet]) -> dict[str, list[str] | GeneSet]:
        return {name: (genes if any(w != 1.0 for w in genes.values()) else list(genes))
                for name, genes in sets.items()}

    def programme_sets(self) -> dict[str, list[str] | GeneSet]:
        """Programmes for scoring: a gene list, or ``{gene: weight}`` where weights differ."""
        return self._as_input(self.programmes)

    def marker_sets(self) -> dict[str, list[str] | GeneSet]:
        """Marker sets for scoring, as :meth:`programme_sets`."""
        return self._as_input(self.markers)

    def programme_lists(self) -> dict[str, list[str]]:
        """Programmes as unweighted gene lists (weight > 0), as GSEA takes them."""
        return {name: [g for g, w in genes.items() if w > 0]
                for name, genes in self.programmes.items()}

    def dropped_sets(self, kind: str) -> dict[str, str]:
        """Sets of ``kind`` (programme or marker) left out, with the reason."""
        return dict(self.dropped.get(kind, {}))

    def to_json(self) -> str:
        """The library as JSON (sets in order; the report is written separately)."""
        return json.dumps({"species": self.species, "programmes": self.programmes,
                           "markers": self.markers, "dropped": self.dropped}, indent=1)

    @classmethod
    def from_json(cls, text: str, report: pd.DataFrame | None = None) -> GeneSetLibrary:
        """Read :meth:`to_json` output back."""
        data = json.loads(text)
        return cls(data["species"], data["programmes"], data["markers"],
                   report if report is not None else pd.DataFrame(columns=LIBRARY_REPORT),
                   data.get("dropped", {}))


LIBRARY_REPORT = ["kind", "gmt", *REPORT_COLUMNS]


def nothing_left_message(kind: str, report: pd.DataFrame, gmts: Sequence[str], *,
                         n_genes: int, min_genes: int) -> str:
    """Why a run cannot go on: every ``kind`` set of ``gmts`` has too few genes in the data."""
    best = report.sort_values("n_found", ascending=False, kind="stable").head(3)
    closest = ", ".join(f"{r.set} {r.n_found} of {r.n_genes}" for r in best.itertuples())
    uses = ("scoring, contrasts and GSEA have" if kind == "programme" else
            "marker annotation has")
    fixes = ("give a programme GMT whose sets fit this panel (genesets.extra or "
             "genesets.programmes)" if kind == "programme" else
             "give a marker GMT whose sets fit this panel (genesets.markers); marker labels "
             "are made in every run, also with annotation.source published or reference, "
             "as their cross-check")
    return (f"none of the {len(report)} {kind} set(s) of {', '.join(gmts)} has "
            f"genesets.min_genes={min_genes} of its genes among the data's {n_genes} genes "
            f"(closest: {closest or 'none'}), so {uses} nothing to work on. The panel is "
            f"too small for these sets: lower genesets.min_genes, or {fixes}.")


def build_library(
    var_names: Iterable[str],
    *,
    data_species: str,
    programme_gmts: Sequence[tuple[str | Path, str]],
    marker_gmt: str | Path,
    min_genes: int,
    sets: Sequence[str] = (),
    synonyms: pd.DataFrame | None = None,
    orthologs: pd.DataFrame | None = None,
    on_too_few: str = "drop",
) -> GeneSetLibrary:
    """Match every GMT of the run to the data's genes (synonyms, orthologs, ``min_genes``).

    ``programme_gmts`` are ``(path, species)`` pairs (the run's programme file, then the
    user's extra files); ``sets`` keeps only those programme names (empty = all). Set names
    must be unique across the programme files. Marker sets are of the data's species. Sets
    with fewer than ``min_genes`` genes found are dropped (and listed in the report and in
    ``dropped``) or stop the run, as ``on_too_few`` says. No programme set left (or no
    marker set: marker labels are made in every run) raises :class:`InputDataError` with
    the GMT, the panel size and the fixes.
    """
    var_names = list(var_names)
    wanted = set(sets)
    programmes: dict[str, GeneSet] = {}
    reports = []
    for gmt, species in programme_gmts:
        found_sets = load_gene_sets([gmt])
        if wanted:
            found_sets = {k: v for k, v in found_sets.items() if k in wanted}
        clash = sorted(set(found_sets) & set(programmes))
        if clash:
            raise ValueError(f"gene-set names {clash} in '{gmt}' repeat names of an earlier "
                             "GMT; rename them so every set name is unique")
        matched, rep = match_gene_sets(found_sets, var_names, set_species=species,
                                       data_species=data_species, min_genes=min_genes,
                                       orthologs=orthologs, synonyms=synonyms,
                                       on_too_few=on_too_few)
        programmes.update({k: as_weights(v) for k, v in matched.items()})
        reports.append(rep.assign(kind="programme", gmt=str(gmt)))
    matched, rep = match_gene_sets(load_gene_sets([marker_gmt]), var_names,
                                   set_species=data_species, data_species=data_species,
                                   min_genes=min_genes, synonyms=synonyms,
                                   on_too_few=on_too_few)
    markers = {k: as_weights(v) for k, v in matched.items()}
    reports.append(rep.assign(kind="marker", gmt=str(marker_gmt)))
    report = pd.concat(reports, ignore_index=True)[LIBRARY_REPORT]
    for kind, kept, files in (("programme", programmes, [str(g) for g, _ in programme_gmts]),
                              ("marker", markers, [str(marker_gmt)])):
        if not kept:
            raise InputDataError(nothing_left_message(
                kind, report[report["kind"] == kind], files, n_genes=len(var_names),
                min_genes=min_genes))
    dropped = report[report["status"] == "dropped"]
    return GeneSetLibrary(data_species, programmes, markers, report, {
        kind: dict(zip(rows["set"], rows["reason"], strict=True))
        for kind, rows in dropped.groupby("kind", sort=False)})


def read_library(path: str | Path, report: str | Path | None = None) -> GeneSetLibrary:
    """Read the library JSON (and its report TSV, when given) written by the library rule."""
    table = pd.read_csv(report, sep="\t", keep_default_na=False) if report else None
    return GeneSetLibrary.from_json(Path(path).read_text(), table)


@settings_section("genesets")
class GeneSetSettings(Settings):
    """Config section ``genesets``: the GMT files and how to match them (keys in the
    schema; config/README.md)."""


def library_stage(var_names: Iterable[str], settings: GeneSetSettings, *, species: str,
                  sets: Sequence[str] = ()) -> GeneSetLibrary:
    """The gene-set library of a run: the species' programme GMT plus the extra GMTs (only
    ``sets`` when given) and the species' marker GMT, matched to ``var_names``; sets with
    too few genes in the data dropped or stopping the run (``genesets.on_too_few``)."""
    gmts = [(settings.programmes[species], species),
            *((e["path"], e["species"]) for e in settings.extra)]
    return build_library(
        var_names, data_species=species, programme_gmts=gmts,
        marker_gmt=settings.markers[species], min_genes=settings.min_genes, sets=sets,
        synonyms=read_synonyms(settings.synonyms), orthologs=read_orthologs(settings.orthologs),
        on_too_few=settings.on_too_few,
    )


def check_gene_set_files(genesets: Mapping, species: str, scoring_sets: Sequence[str] = ()
                         ) -> None:
    """Every gene-set, synonym and ortholog file of the run must exist, the GMT files must
    parse (no empty sets, set names unique across the programme and extra files), and the
    programme sets named in ``scoring.sets`` must exist."""
    files: list[tuple[str, str]] = []
    for kind in ("programmes", "markers"):
        if species not in genesets[kind]:
            raise ConfigError(
                f"config key 'genesets.{kind}' has no entry for species '{species}' (the "
                f"sample sheet's species); add `{species}: <path of a GMT file>` under it."
            )
        files.append((f"genesets.{kind}.{species}", genesets[kind][species]))
    extra = genesets.get("extra") or []
    files += [(f"genesets.extra[{i}].path", e["path"]) for i, e in enumerate(extra)]
    files += [(f"genesets.{k}", genesets[k]) for k in ("synonyms", "orthologs") if genesets.get(k)]
    for key, file in files:
        if not Path(file).is_file():
            raise ConfigError(
                f"config key '{key}': gene-set file '{file}' does not exist (paths are "
                "relative to the working directory). Fix the path in config.yaml or create "
                "the file (GMT format: name<TAB>description<TAB>gene1<TAB>gene2...)."
            )
    groups = [(files[0][0], [files[0][1]] + [e["path"] for e in extra]),
              (files[1][0], [files[1][1]])]
    loaded = []
    for key, paths in groups:
        try:
            loaded.append(load_gene_sets(paths))
        except ValueError as err:
            raise ConfigError(
                f"gene sets of config key '{key}'"
                + (" and genesets.extra" if len(paths) > 1 else "")
                + f" are unusable: {err}. Fix the GMT file (one set a line: "
                "name<TAB>description<TAB>gene1<TAB>gene2..., unique names, no empty sets)."
            ) from err
    unknown = sorted(set(scoring_sets) - set(loaded[0]))
    if unknown:
        hints = {u: nearest_key(u, list(loaded[0])) for u in unknown}
        raise ConfigError(
            f"config key 'scoring.sets' names set(s) {unknown} that no programme GMT "
            f"({', '.join(groups[0][1])}) defines"
            + "".join(f"; did you mean '{h}' for '{u}'?" for u, h in hints.items() if h)
            + ". Use names of the programme files (config/README.md lists the shipped sets)."
        )
