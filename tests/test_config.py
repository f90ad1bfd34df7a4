"""The config layer: one schema with every default, one loader, settings built from it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from mscflow import config as cfg
from mscflow.annotate.core import AnnotationSettings
from mscflow.cluster.core import ClusterSettings
from mscflow.contrast import ContrastSettings
from mscflow.errors import ConfigError, SampleSheetError
from mscflow.genesets import GeneSetSettings
from mscflow.inputs.fetch import FetchSettings
from mscflow.inputs.samplesheet import read_sample_sheet
from mscflow.qc.core import QCSettings
from mscflow.scoring.core import ScoringSettings

REPO = Path(__file__).resolve().parents[1]
SETTINGS = [QCSettings, ClusterSettings, GeneSetSettings, ScoringSettings, AnnotationSettings,
            FetchSettings, ContrastSettings]


def _leaves(node: object, path: str = "") -> dict[str, object]:
    if isinstance(node, dict) and node:
        out: dict[str, object] = {}
        for key, value in node.items():
            out.update(_leaves(value, f"{path}.{key}" if path else key))
        return out
    return {path: node}


def test_every_key_has_a_default_and_defaults_validate() -> None:
    defaults = cfg.schema_defaults()
    assert cfg.validate_config(defaults) == defaults
    schema = cfg.load_schema()

    def walk(node: dict, where: str) -> None:
        for key, sub in node.get("properties", {}).items():
            here = f"{where}.{key}" if where else key
            if key == "preset":  # unset means: no preset
                continue
            if sub.get("type") == "object" and "properties" in sub:
                walk(sub, here)
            else:
                assert "default" in sub, f"config key {here} has no default in the schema"

    walk(schema, "")


def test_shipped_config_repeats_the_schema_defaults() -> None:
    shipped = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    defaults = _leaves(cfg.schema_defaults())
    for key, value in _leaves(shipped).items():
        if key.startswith("contrasts"):  # the demo's contrasts are the shipped example
            continue
        assert key in defaults, f"config.yaml key {key} is not in the schema"
        assert value == defaults[key], f"config.yaml {key}={value!r}, schema {defaults[key]!r}"


def test_unknown_key_names_the_nearest_valid_key() -> None:
    with pytest.raises(ConfigError) as err:
        cfg.validate_config({"qc": {"nmad_counts": 4}})
    assert "unknown key(s) ['nmad_counts'] in 'qc'" in str(err.value)
    assert "did you mean 'nmads_counts'" in str(err.value)
    with pytest.raises(ConfigError, match="did you mean 'permutations'"):
        cfg.validate_config({"contrast_settings": {"gsea": {"permutaions": 10}}})
    with pytest.raises(ConfigError, match="did you mean 'seed'"):
        cfg.validate_config({"sed": 1})


def test_defaults_fill_nested_sections_and_list_items() -> None:
    filled = cfg.validate_config({"cluster": {"n_pcs": 20},
                                  "contrasts": [{"name": "a", "tissue": "lung",
                                                 "condition": "MSC", "reference": "control"}]})
    assert filled["cluster"]["n_pcs"] == 20 and filled["cluster"]["n_neighbors"] == 15
    assert filled["contrasts"][0]["covariates"] == []
    assert filled["contrast_settings"]["gsea"]["permutations"] == 1000
    assert filled["qc"]["on_too_few_cells"] == "stop"


@pytest.mark.parametrize("cls", SETTINGS, ids=lambda c: c.__name__)
def test_settings_fields_are_the_schema_keys_without_defaults(cls) -> None:
    keys = set(cfg.section_schema(cls.SECTION)["properties"])
    fields = {f.name: f for f in dataclasses.fields(cls)}
    config_fields = {n for n, f in fields.items() if not f.metadata.get("runtime")}
    assert config_fields == keys, f"{cls.__name__} fields differ from schema '{cls.SECTION}'"
    for name in config_fields:  # defaults live in the schema only
        f = fields[name]
        assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, \
            f"{cls.__name__}.{name} has a default outside the schema"


@pytest.mark.parametrize("cls", SETTINGS, ids=lambda c: c.__name__)
def test_settings_reject_unknown_keys_and_round_trip(cls) -> None:
    runtime = {f.name: 1 for f in dataclasses.fields(cls) if f.metadata.get("runtime")}
    built = cls.from_config({}, **runtime)
    assert cfg.validate_config({cls.SECTION.split(".")[0]: built.to_config()}) is not None
    key = next(iter(cfg.section_schema(cls.SECTION)["properties"]))
    typo = key[:-1] + ("x" if key[-1] != "x" else "y")
    with pytest.raises(ConfigError) as err:
        cls.from_config({typo: 1}, **runtime)
    assert f"'{typo}'" in str(err.value) and f"did you mean '{key}'" in str(err.value)


def test_rules_and_scripts_take_no_defaults_of_their_own() -> None:
    """Rules and scripts read the validated config; `.get(key, default)` would be a second
    place for a default."""
    pattern = re.compile(r"(config|params|settings|smk\.params\.\w+)(\[[^\]]+\])*\.get\(")
    files = [*(REPO / "workflow" / "rules").glob("*.smk"),
             *(REPO / "workflow" / "scripts").glob("*.py")]
    offenders = [f"{f.name}:{n}" for f in files
                 for n, line in enumerate(f.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, f"defaults read outside the schema: {offenders}"


def test_sheet_comments_and_hash_inside_fields(tmp_path: Path) -> None:
    sheet = tmp_path / "s.tsv"
    sheet.write_text("# a comment line\n"
                     "sample\ttissue\tcondition\treplicate\tspecies\tpath\tformat\tnote\n"
                     "\n"
                     "a\tlung\tcontrol\t1\tmouse\tdata/a#1\t10x_mtx\tbatch #2\n"
                     "  # indented comment\n"
                     "b\tlung\tMSC\t1\tmouse\tdata/b\t10x_mtx\n")
    rows = read_sample_sheet(sheet)
    assert rows.loc["a", "path"] == "data/a#1" and rows.loc["a", "note"] == "batch #2"
    assert rows.loc["b", "note"] == "" and rows.attrs["lines"] == {"a": 4, "b": 6}
    assert rows.loc["a", "url"] == "" and rows.loc["a", "member"] == ""
    sheet.write_text("sample\ttissue\tcondition\treplicate\tspecies\tpath\tformat\n"
                     "a\tlung\tcontrol\t1\tmouse\tp\t10x_mtx\textra\n")
    with pytest.raises(SampleSheetError, match="line 2: 8 fields but the header has 7"):
        read_sample_sheet(sheet)


def test_quoted_sheet_fields_lose_their_quotes(tmp_path: Path) -> None:
    """A sheet saved by a spreadsheet quotes fields holding quotes or separators: the
    quotes are the file's, not the value's (a contrast then matches the condition)."""
    sheet = tmp_path / "s.tsv"
    sheet.write_text('sample\ttissue\t"condition"\treplicate\tspecies\tpath\tformat\tnote\n'
                     'a\tlung\t"MSC ""apoptotic"""\t"1"\tmouse\tdata/a\t10x_mtx\t"x, y"\n'
                     'b\tlung\tcontrol\t1\tmouse\tdata/b\t10x_mtx\t"unbalanced\n')
    rows = read_sample_sheet(sheet, validate=False)
    assert rows.loc["a", "condition"] == 'MSC "apoptotic"' and rows.loc["a", "note"] == "x, y"
    assert rows.loc["a", "replicate"] == "1" and rows.loc["b", "note"] == '"unbalanced'


def _holds(filled: object, given: object) -> bool:
    """Whether ``filled`` (defaults added) holds every value of ``given``."""
    if isinstance(given, dict):
        return isinstance(filled, dict) and all(_holds(filled.get(k), v) for k, v in given.items())
    if isinstance(given, list):
        return isinstance(filled, list) and len(filled) == len(given) and all(
            _holds(f, g) for f, g in zip(filled, given, strict=True))
    return filled == given


def _snakemake_config(*entries: str) -> dict:
    """``--config`` entries as Snakemake itself hands them to the workflow."""
    from snakemake.cli import parse_config

    return parse_config(list(entries))


# One documented override per section, as a user types it (config/README.md, docs/).
SECTION_OVERRIDES = {
    "qc": ("qc={min_counts: 600, doublet_method: scrublet}",
           {"min_counts": 600, "doublet_method": "scrublet"}),
    "fetch": ("fetch={update_lock: true}", {"update_lock": True}),
    "cluster": ("cluster={resolutions: [0.5, 1.5], default_resolution: 1.5}",
                {"resolutions": [0.5, 1.5], "default_resolution": 1.5}),
    "genesets": ("genesets={min_genes: 2}", {"min_genes": 2}),
    "scoring": ("scoring={sets: [momf, pan_macrophage]}", {"sets": ["momf", "pan_macrophage"]}),
    "annotation": ("annotation={min_margin: 0.1}", {"min_margin": 0.1}),
    "report": ("report={explorer_max_cells: 5000}", {"explorer_max_cells": 5000}),
    "contrast_settings": ("contrast_settings={fdr: 0.1, gsea: {permutations: 200}}",
                          {"fdr": 0.1, "gsea": {"permutations": 200}}),
    "trajectory": ("trajectory={tissues: [liver], n_dcs: 8}", {"tissues": ["liver"], "n_dcs": 8}),
    "communication": ("communication={enabled: false, n_perms: 50}",
                      {"enabled": False, "n_perms": 50}),
    "demo": ("demo={cells_per_sample: 400}", {"cells_per_sample": 400}),
    "contrasts": ("contrasts=[{name: lung_msc, tissue: lung, condition: '1', "
                  "reference: control}]",
                  [{"name": "lung_msc", "tissue": "lung", "condition": "1",
                    "reference": "control"}]),
}


def test_every_schema_section_has_a_documented_override() -> None:
    schema = cfg.load_schema()["properties"]
    sections = {k for k, v in schema.items() if v.get("type") in ("object", "array")}
    assert sections - {"preset"} <= set(SECTION_OVERRIDES) | {"h5ad_compression"}, \
        sorted(sections - set(SECTION_OVERRIDES))


@pytest.mark.parametrize("section", sorted(SECTION_OVERRIDES))
def test_nested_config_overrides_take_the_schema_types(section: str) -> None:
    """Snakemake reads nested --config values as text; the run types them by the schema
    (text the schema takes as text, like the condition '1', stays text)."""
    entry, expected = SECTION_OVERRIDES[section]
    given = _snakemake_config(entry)
    typed = cfg.parse_cli_overrides(given)
    assert typed[section] == expected
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    filled = cfg.validate_config(cfg.deep_update(base, typed))
    assert _holds(filled[section], expected), (filled[section], expected)


def test_config_override_of_the_wrong_type_still_names_the_key() -> None:
    typed = cfg.parse_cli_overrides(_snakemake_config("qc={min_counts: many}"))
    with pytest.raises(ConfigError, match=r"qc.min_counts: 'many' is not of type 'integer'"):
        cfg.validate_config(typed)


def test_settings_read_the_json_a_rule_hands_over() -> None:
    """Rules hand config sections to jobs as markup-free JSON (report.html shows params)."""
    from mscflow.report.markup import report_json

    text = report_json({"min_counts": 600, "doublet_method": "scrublet"})
    assert "<" not in text and QCSettings.from_config(text).min_counts == 600
