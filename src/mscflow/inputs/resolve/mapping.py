"""From a record's samples to sample-sheet rows, as a preset's ``preset.yaml`` says.

- ``select``: field -> regular expression; a record sample is kept when every listed field
  exists and matches (``re.search``). Named groups (``(?P<donor>\\d+)``) become fields.
- ``recode``: field -> {value: replacement}, applied to field values (case-insensitive
  lookup) before the templates, e.g. ``fraction: {"+": CD45pos, "-": CD45neg}``.
- ``columns``: sheet column -> template. ``{field}`` inserts a field, ``{field|lower}``
  with filters ``lower``, ``upper`` and ``slug`` (characters other than letters, digits,
  ``_ . -`` become ``_``). ``sample``, ``tissue``, ``condition`` and ``replicate`` are
  required; ``species`` defaults to the record's organism (Homo sapiens -> human, Mus
  musculus -> mouse); any other column is kept as sample metadata (e.g. donor, sex).
- ``expect``: the record accessions (GSM ...) the mapping must select, no more, no fewer;
  a record that changed, or a mapping that drifted, stops the run instead of silently
  analysing other samples.
- ``file_pattern``: a regular expression choosing among a sample's files (e.g. ``filtered``
  when a GSM has both raw and filtered matrices).

Fields of every record sample: ``accession`` (its GSM, source name or dataset id) and what
the resolver found (GEO: ``title``, ``gsm``, ``source_name``, ``organism``,
``description``, ``platform``, and each characteristic by its normalised key, e.g.
``cause_of_liver_disease``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from mscflow.inputs.archives import mtx_role, select_members
from mscflow.inputs.resolve.base import PresetError, RecordFile, RecordSample
from mscflow.inputs.samplesheet import sample_id_problem

REQUIRED_COLUMNS = ("sample", "tissue", "condition", "replicate")
ORGANISMS = {"homo sapiens": "human", "mus musculus": "mouse"}
TEMPLATE_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)((?:\|[a-z]+)*)\}")
ARCHIVE_RE = re.compile(r"\.(tar|tar\.gz|tgz|zip)$", re.IGNORECASE)
FILTERS = {
    "lower": str.lower,
    "upper": str.upper,
    "slug": lambda v: re.sub(r"[^A-Za-z0-9_.-]+", "_", v).strip("_"),
}


def render(template: str, values: Mapping[str, str], *, where: str) -> str:
    """Fill ``{field|filter}`` placeholders of ``template`` from ``values``."""

    def one(match: re.Match) -> str:
        name, filters = match.group(1), [f for f in match.group(2).split("|") if f]
        if name not in values:
            raise PresetError(f"{where}: template '{template}' names field '{name}', which "
                              f"this sample does not have (fields: {sorted(values)}).")
        value = values[name]
        for flt in filters:
            if flt not in FILTERS:
                raise PresetError(f"{where}: template '{template}' uses unknown filter "
                                  f"'{flt}' (filters: {sorted(FILTERS)}).")
            value = FILTERS[flt](value)
        return value

    return TEMPLATE_RE.sub(one, template)


def selected(record: RecordSample, select: Mapping[str, str], where: str
             ) -> dict[str, str] | None:
    """The sample's fields plus named groups when every ``select`` pattern matches."""
    values = {"accession": record.accession, **record.fields}
    for name, pattern in select.items():
        try:
            match = re.search(pattern, values.get(name, "")) if name in values else None
        except re.error as err:
            raise PresetError(f"{where}: select.{name} '{pattern}' is not a valid regular "
                              f"expression ({err}).") from err
        if match is None:
            return None
        values.update({k: v for k, v in match.groupdict().items() if v is not None})
    return values


def recoded(values: dict[str, str], recode: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """``values`` with each ``recode`` table applied (keys compared case-insensitively)."""
    out = dict(values)
    for name, table in recode.items():
        lookup = {str(k).lower(): str(v) for k, v in table.items()}
        if name in out and out[name].lower() in lookup:
            out[name] = lookup[out[name].lower()]
    return out


def _problem(record: RecordSample, what: str, names: Sequence[str]) -> str:
    return (f"sample {record.accession} has {what} among its files {list(names) or 'none'}; "
            "set `file_pattern` in preset.yaml to the one to use")


def pick_files(record: RecordSample, fmt: str, file_pattern: str = "",
               where: str = "preset") -> tuple[list[str], str]:
    """(URLs, archive member) of the files that hold ``record`` in format ``fmt``."""
    if record.explicit_member is not None:  # a `files` preset: its entry names the member
        return [f.url for f in record.files], record.explicit_member
    files = [f for f in record.files if not file_pattern or re.search(file_pattern, f.name)]
    names = [f.name for f in files]
    if fmt == "10x_mtx":
        roles: dict[str, list[RecordFile]] = {}
        for f in files:
            role = mtx_role(f.name)
            if role:
                roles.setdefault(role[0], []).append(f)
        if len(roles) == 3 and all(len(v) == 1 for v in roles.values()):
            chosen = [v[0] for v in roles.values()]
        elif len([f for f in files if ARCHIVE_RE.search(f.name)]) == 1 and not roles:
            chosen = [f for f in files if ARCHIVE_RE.search(f.name)]
        else:
            raise PresetError(f"{where}: " + _problem(
                record, "not exactly one matrix, barcodes and features/genes file", names))
    else:
        suffix = r"\.h5$" if fmt == "10x_h5" else r"\.h5ad(\.gz)?$"
        chosen = [f for f in files if re.search(suffix, f.name, re.IGNORECASE)]
        if len(chosen) != 1:
            raise PresetError(f"{where}: " + _problem(
                record, f"{len(chosen)} {fmt} files instead of one", names))
    return _urls_and_member(record, chosen, where)


def _urls_and_member(record: RecordSample, chosen: list[RecordFile], where: str
                     ) -> tuple[list[str], str]:
    members = [f.member for f in chosen if f.member]
    if not members:
        return [f.url for f in chosen], ""
    if ARCHIVE_RE.search(members[0]) or len({f.url for f in chosen}) != 1:
        raise PresetError(f"{where}: sample {record.accession}: archive members {members} "
                          "are archives themselves or sit in different archives; mscflow "
                          "unpacks one archive level. Use `take: sample`.")
    prefix = members[0] if len(members) == 1 else os.path.commonprefix(members)
    every_member = [f.member for f in record.files if f.member]
    if sorted(select_members(every_member, prefix)) != sorted(members):
        raise PresetError(f"{where}: sample {record.accession}: the files {members} share no "
                          f"prefix that selects only them in the archive; set file_pattern.")
    return [chosen[0].url], prefix


def sheet_rows(spec: Mapping[str, Any], records: Sequence[RecordSample], where: str
               ) -> list[dict[str, str]]:
    """Sample-sheet rows (``sample``, ``tissue``, ``condition``, ``replicate``, ``species``,
    ``format``, ``url``, ``member``, ``record``, extra columns) for the selected samples."""
    rows, taken = [], []
    columns = dict(spec["columns"])
    for record in records:
        values = selected(record, spec.get("select", {}), where)
        if values is None:
            continue
        values = recoded(values, spec.get("recode", {}))
        here = f"{where}, record sample {record.accession}"
        row = {col: render(str(tpl), values, where=f"{here}, column '{col}'")
               for col, tpl in columns.items()}
        if "species" not in row:
            organism = values.get("organism", "")
            if organism.lower() not in ORGANISMS:
                raise PresetError(f"{here}: organism '{organism}' is not mouse or human; add "
                                  "`species` to columns or narrow `select`.")
            row["species"] = ORGANISMS[organism.lower()]
        problem = sample_id_problem(row["sample"])
        if problem:
            raise PresetError(f"{here}: sample id '{row['sample']}' from template "
                              f"'{columns['sample']}' is not allowed: {problem}. Use the "
                              "`|slug` filter or `recode`.")
        urls, member = pick_files(record, spec["format"], spec.get("file_pattern", ""), here)
        rows.append({**row, "format": spec["format"], "layer": spec.get("layer", ""),
                     "url": " ".join(urls), "sha256": "", "member": member,
                     "record": record.accession})
        taken.append(record.accession)
    _check_selection(spec, records, rows, taken, where)
    return rows


def _check_selection(spec: Mapping[str, Any], records: Sequence[RecordSample],
                     rows: list[dict[str, str]], taken: list[str], where: str) -> None:
    if not rows:
        seen = "; ".join(f"{r.accession}: {r.fields.get('title', '')}" for r in records[:8])
        raise PresetError(f"{where}: `select` matched none of the record's {len(records)} "
                          f"samples (first: {seen}). The record changed or the mapping is "
                          "wrong: compare select with the record's fields.")
    expect = list(spec.get("expect") or [])
    if expect and sorted(expect) != sorted(taken):
        raise PresetError(
            f"{where}: the mapping selected {len(taken)} record samples, the preset expects "
            f"{len(expect)}: missing {sorted(set(expect) - set(taken))}, unexpected "
            f"{sorted(set(taken) - set(expect))}. The record changed or the mapping drifted; "
            "check the record before changing `expect`."
        )
    seen: dict[str, str] = {}
    for row in rows:
        if row["sample"] in seen:
            raise PresetError(f"{where}: records {seen[row['sample']]} and {row['record']} "
                              f"both map to sample '{row['sample']}'; make the `sample` "
                              "template unique (add the accession or a field).")
        seen[row["sample"]] = row["record"]
    species = sorted({r["species"] for r in rows})
    if len(species) > 1:
        raise PresetError(f"{where}: the selected samples mix species {species}; narrow "
                          "`select` (e.g. organism: '^Homo sapiens$') to one species.")


def explicit_records(source: Mapping[str, Any], entries: Sequence[Mapping[str, Any]],
                     where: str) -> list[RecordSample]:
    """Record samples of a ``files`` preset: its ``samples`` entries, each naming one of
    ``source.urls`` in ``file`` and, for an archive, its ``member``."""
    urls = source.get("urls", {})
    records = []
    for n, entry in enumerate(entries, start=1):
        fields = {str(k): str(v) for k, v in entry.items()}
        file = fields.pop("file", "")
        if file not in urls:
            raise PresetError(f"{where}: samples[{n}] names file '{file}', which source.urls "
                              f"does not list ({sorted(urls)}).")
        member = fields.pop("member", "")
        url = urls[file]
        name = url.rstrip("/").rsplit("/", 1)[-1]
        records.append(RecordSample(fields.get("accession", f"{file}:{member or n}"), fields,
                                    [RecordFile(name, url)], explicit_member=member))
    return records
