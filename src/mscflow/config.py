"""The run's configuration: one loader validates ``config.yaml`` against its JSON schema and
fills every default from the schema; settings dataclasses are built from its sections.

Where things live:

* ``mscflow/schemas/config.schema.yaml``: every key, its type, range and default (the only
  place a default is written). ``config/README.md`` documents them.
* :func:`validate_config`: schema check with messages naming the key (and the nearest valid
  key for a typo), then defaults filled in. Used by ``common.smk`` before any job runs.
* :class:`Settings`: base of every settings dataclass (``QCSettings``, ``ClusterSettings``
  ...). ``Settings.from_config(section)`` validates one section, fills its defaults and
  builds the dataclass, so a script given a config section never needs a default of its own.

The pre-run check that uses these settings (preset, sample sheet, gene sets, contrasts) is
:func:`mscflow.run.prepare_run`; this module imports nothing of mscflow but its errors.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import json
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from mscflow.errors import ConfigError

SCHEMA_DIR = Path(__file__).parent / "schemas"
CONFIG_SCHEMA = SCHEMA_DIR / "config.schema.yaml"
SAMPLES_SCHEMA = SCHEMA_DIR / "samples.schema.yaml"
DOCS_HINT = "every key, its type, range and default are documented in config/README.md"

S = TypeVar("S", bound="Settings")


# ------------------------------------------------------------------------------ schemas


@functools.cache
def _load_schema(path: str) -> dict:
    return yaml.safe_load(Path(path).read_text())


def load_schema(path: str | Path = CONFIG_SCHEMA) -> dict:
    """The JSON schema at ``path`` (a fresh copy; the parsed file is cached)."""
    return copy.deepcopy(_load_schema(str(path)))


def section_schema(section: str, schema: Mapping | None = None) -> dict:
    """Schema of a dotted config section, e.g. ``"qc"`` or ``"contrast_settings.gsea"``."""
    node: Mapping = schema if schema is not None else _load_schema(str(CONFIG_SCHEMA))
    for part in section.split("."):
        try:
            node = node["properties"][part]
        except KeyError:
            raise KeyError(f"config schema has no section {section!r}") from None
    return copy.deepcopy(dict(node))


def nearest_key(key: str, allowed: Sequence[str]) -> str | None:
    """The allowed key closest to a misspelt ``key`` (None when nothing is close)."""
    hits = difflib.get_close_matches(str(key), [str(a) for a in allowed], n=1, cutoff=0.6)
    return hits[0] if hits else None


def unknown_keys_message(unknown: Sequence[str], allowed: Sequence[str], where: str) -> str:
    """``unknown key(s) [...] in 'where'; did you mean ...?`` with the allowed keys."""
    hints = [f"'{nearest_key(k, allowed)}' for '{k}'" for k in unknown if nearest_key(k, allowed)]
    text = f"unknown key(s) {sorted(unknown)} in {where}"
    if hints:
        text += f"; did you mean {', '.join(hints)}?"
    return text + f" (check the spelling; allowed keys: {sorted(allowed)})"


def _error_text(err: Any, prefix: str = "") -> str:  # err: jsonschema.ValidationError
    """One line per schema violation: the dotted key, what is wrong, what is allowed."""
    path = ".".join(str(p) for p in err.absolute_path)
    key = ".".join(x for x in (prefix, path) if x) or "(top level)"
    if err.validator == "additionalProperties" and isinstance(err.instance, Mapping):
        allowed = sorted(err.schema.get("properties", {}))
        unknown = sorted(k for k in err.instance if k not in allowed)
        where = "top level" if key == "(top level)" else f"'{key}'"
        return unknown_keys_message(unknown, allowed, where)
    if err.validator == "required":
        return f"{key}: {err.message}; add it"
    schema = err.schema if isinstance(err.schema, Mapping) else {}
    bounds = {k: schema[k] for k in ("type", "enum", "minimum", "exclusiveMinimum", "maximum",
                                      "exclusiveMaximum", "pattern") if k in schema}
    text = f"{key}: {err.message}"
    if bounds:
        text += f" (allowed: {', '.join(f'{k} {v}' for k, v in bounds.items())})"
    if schema.get("description"):
        text += f" -- {schema['description']}"
    return text


def schema_errors(instance: object, schema: Mapping | str | Path, prefix: str = "") -> list[str]:
    """Every violation of ``schema`` (a mapping or a schema file) by ``instance``, as text."""
    import jsonschema  # snakemake's dependency; imported here to keep the package light

    if not isinstance(schema, Mapping):
        schema = _load_schema(str(schema))
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.path)))
    return [_error_text(e, prefix) for e in errors]


def _has_defaults(schema: Mapping) -> bool:
    """Whether an object schema declares a default anywhere below it."""
    props = schema.get("properties", {})
    return any("default" in s or _has_defaults(s) for s in props.values())


def fill_defaults(instance: Any, schema: Mapping) -> Any:
    """A copy of ``instance`` with every schema default filled in, at any depth.

    A missing object section whose keys have defaults is created; list items are filled
    from the ``items`` schema. Values the user gave are never changed.
    """
    if isinstance(instance, Mapping) and "properties" in schema:
        out = dict(instance)
        for key, sub in schema["properties"].items():
            if key not in out:
                if "default" in sub:
                    out[key] = copy.deepcopy(sub["default"])
                elif sub.get("type") == "object" and _has_defaults(sub):
                    out[key] = {}
                else:
                    continue
            out[key] = fill_defaults(out[key], sub)
        return out
    if isinstance(instance, list) and isinstance(schema.get("items"), Mapping):
        return [fill_defaults(item, schema["items"]) for item in instance]
    return instance


def schema_defaults(section: str | None = None) -> dict:
    """Every default of the config schema (or of one dotted section), as a config mapping."""
    schema = section_schema(section) if section else load_schema()
    return fill_defaults({}, schema)


def deep_update(base: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``new``, merging nested mappings key by key."""
    out = dict(base)
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = value
    return out


def _schema_child(node: Mapping | None, key: str | None) -> Mapping | None:
    """Schema of a mapping's ``key`` (or of a list's items when ``key`` is None)."""
    if not isinstance(node, Mapping):
        return None
    if key is None:
        items = node.get("items")
        return items if isinstance(items, Mapping) else None
    extra = node.get("additionalProperties")
    return node.get("properties", {}).get(key, extra if isinstance(extra, Mapping) else None)


def _typed_text(value: Any, node: Mapping | None) -> Any:
    """``value`` with every text leaf the schema does not take as text read as YAML."""
    if isinstance(value, Mapping):
        return {k: _typed_text(v, _schema_child(node, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed_text(v, _schema_child(node, None)) for v in value]
    if not isinstance(value, str) or node is None or not schema_errors(value, node):
        return value
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    return parsed if not schema_errors(parsed, node) else value


def parse_cli_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``--config`` values typed as the schema wants them.

    Snakemake reads ``--config qc='{min_counts: 600}'`` with YAML's base loader, so nested
    values arrive as text (``{'min_counts': '600'}``); every text value the schema does not
    accept as text is read as YAML (``'600'`` -> 600, ``'true'`` -> True) and kept when the
    schema accepts that. Values the schema takes as text (paths, names) stay as written.
    """
    return _typed_text(dict(overrides), load_schema())


def cross_field_problems(config: Mapping[str, Any]) -> list[str]:
    """Settings valid one by one that contradict each other, one line each naming both keys."""
    problems = []
    cluster, qc = config.get("cluster", {}), config.get("qc", {})
    resolutions = [float(r) for r in cluster.get("resolutions", [])]
    default = cluster.get("default_resolution")
    if default is not None and resolutions and float(default) not in resolutions:
        problems.append(
            f"cluster.default_resolution {default:g} is not among cluster.resolutions "
            f"[{', '.join(f'{r:g}' for r in resolutions)}]: add it to cluster.resolutions or set "
            "cluster.default_resolution to one of them")
    floor, ceiling = qc.get("pct_mito_floor"), qc.get("max_pct_mito")
    if floor is not None and ceiling is not None and floor > ceiling:
        problems.append(
            f"qc.pct_mito_floor {floor:g} is above qc.max_pct_mito {ceiling:g}: the MAD "
            "threshold is kept between the two, so the floor must not exceed the ceiling")
    n_pcs, n_top = cluster.get("n_pcs"), cluster.get("n_top_genes")
    if n_pcs is not None and n_top is not None and n_pcs >= n_top:
        problems.append(
            f"cluster.n_pcs {n_pcs} is not below cluster.n_top_genes {n_top}: principal "
            "components are computed on the highly variable genes; lower cluster.n_pcs or "
            "raise cluster.n_top_genes")
    return problems


def validate_config(config: Mapping, *, source: str = "config.yaml (with --config)") -> dict:
    """Check ``config`` against the schema and return it with every default filled in.

    Raises :class:`ConfigError` listing every bad key with what is allowed and, for a
    misspelt key, the nearest valid one.
    """
    schema = load_schema()
    errors = schema_errors(dict(config), schema)
    filled = fill_defaults(dict(config), schema) if not errors else {}
    if not errors:
        errors = schema_errors(filled, schema)  # a wrong default in the schema itself
    if not errors:
        errors = cross_field_problems(filled)
    if errors:
        raise ConfigError(
            f"{source} is invalid:\n  - " + "\n  - ".join(errors)
            + f"\nFix these keys in the config file (or --config); {DOCS_HINT}."
        )
    return filled


# ----------------------------------------------------------------------------- settings


def _type_parts(hint: Any) -> tuple[Any, ...]:
    """The members of a union hint (``X | None``), else the hint itself."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return typing.get_args(hint)
    return (hint,)


def _coerce(value: Any, hint: Any, section: str, name: str) -> Any:
    """Turn a validated YAML value into the dataclass field's type."""
    if value is None:
        return None
    for part in _type_parts(hint):
        origin = typing.get_origin(part) or part
        if isinstance(origin, type) and issubclass(origin, Settings):
            return origin.from_config(value)
        if origin is tuple and isinstance(value, (list, tuple)):
            args = typing.get_args(part)
            if args and args[0] is float:
                return tuple(float(v) for v in value)
            return tuple(value)
        if part is Path:
            return Path(value)
        if part is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
    return value


@dataclass(frozen=True)
class Settings:
    """Base of the settings dataclasses: one per config section (``SECTION``).

    Fields are the section's keys; fields with ``metadata={"runtime": True}`` are not
    config keys but values a job supplies (threads, the run's seed) as keywords of
    :meth:`from_config`.
    """

    SECTION: ClassVar[str] = ""

    @classmethod
    def from_config(cls: type[S], section: Mapping | str | None = None, **runtime: Any) -> S:
        """Validate the config section, fill its schema defaults, build the settings.

        ``section`` is a mapping, or its JSON text (how rules hand it over, see
        ``mscflow.report.markup.report_json``).

        An unknown key raises :class:`ConfigError` naming it and the nearest valid key.
        """
        schema = section_schema(cls.SECTION)
        if isinstance(section, str):  # a rule's params as JSON (mscflow.report.markup)
            section = json.loads(section)
        values = dict(section or {})
        errors = schema_errors(values, schema, prefix=cls.SECTION)
        if errors:
            raise ConfigError(f"config section '{cls.SECTION}' is invalid:\n  - "
                              + "\n  - ".join(errors) + f"\n{DOCS_HINT}.")
        values = fill_defaults(values, schema)
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        config_fields = {n for n, f in fields.items() if not f.metadata.get("runtime")}
        unknown = sorted(set(values) - config_fields)
        if unknown:  # the schema knows a key the dataclass does not: a programming error
            raise ConfigError(unknown_keys_message(unknown, sorted(config_fields),
                                                   f"'{cls.SECTION}'"))
        missing_runtime = sorted(set(fields) - config_fields - set(runtime))
        extra_runtime = sorted(set(runtime) - (set(fields) - config_fields))
        if missing_runtime or extra_runtime:
            raise TypeError(f"{cls.__name__}.from_config: runtime values missing "
                            f"{missing_runtime}, unexpected {extra_runtime}")
        kwargs = {n: _coerce(values.get(n), hints[n], cls.SECTION, n) for n in config_fields}
        return cls(**kwargs, **runtime)

    def to_config(self) -> dict:
        """The config section these settings stand for (runtime fields left out)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.metadata.get("runtime"):
                continue
            value = getattr(self, f.name)
            if isinstance(value, Settings):
                value = value.to_config()
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Path):
                value = str(value)
            out[f.name] = value
        return out


def runtime_field(**kwargs: Any) -> Any:
    """A settings field a job supplies (not a config key), e.g. threads or the run's seed."""
    return dataclasses.field(metadata={"runtime": True}, **kwargs)


_JSON_TYPES: dict[str, Any] = {"number": float, "integer": int, "string": str,
                               "boolean": bool, "object": dict}


def _python_type(schema: Mapping) -> Any:
    """The Python type of a schema node: arrays become tuples, nullable types ``X | None``."""
    kinds = schema.get("type", "string")  # an enum without a type is a choice of strings
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    types_ = []
    for kind in kinds:
        if kind == "null":
            continue
        if kind == "array":
            item = _python_type(schema.get("items", {"type": "string"}))
            types_.append(tuple[item, ...])
        else:
            types_.append(_JSON_TYPES[kind])
    out = types_[0]
    for extra in types_[1:]:
        out = out | extra
    return out | None if "null" in kinds else out


def settings_section(section: str, **nested: type[Settings]) -> Any:
    """Class decorator making a frozen :class:`Settings` dataclass of a config section.

    Its fields are the section's keys, with types from the schema (``nested`` names the
    settings class of a sub-section, e.g. ``gsea=GseaSettings``), followed by the runtime
    fields the class body declares with :func:`runtime_field`. The keys, types and defaults
    are written once, in the schema; config/README.md says what they mean.
    """
    properties = section_schema(section)["properties"]

    def wrap(cls: type[S]) -> type[S]:
        runtime = dict(cls.__dict__.get("__annotations__", {}))
        annotations = {key: nested.get(key) or _python_type(sub)
                       for key, sub in properties.items()}
        cls.__annotations__ = {**annotations, **runtime}
        cls.SECTION = section
        return dataclass(frozen=True)(cls)

    return wrap
