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
