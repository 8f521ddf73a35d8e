"""Load and validate ``config.yaml``: YAML, then the schema, then the names; every error names the key.

Structure checks come from ``deltanet/schemas/config.schema.yaml`` (JSON Schema 2020-12, shipped with the package;
the Snakefile validates with this module too); name checks (variants, tasks, scale) come from the registries, read
without importing torch. What a valid config selects is :mod:`deltanet.selection`.

Before the checks, numbers and booleans written as strings are converted where the schema asks for them: Snakemake
passes the items of a ``--config`` list as strings (``seeds=[1,2]`` gives ``['1', '2']``), and YAML 1.1 reads
``5e-3`` (no dot in the mantissa) as a string.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import jsonschema
import yaml

from deltanet.names import unknown_name
from deltanet.tasks import get_task, task_settings
from deltanet.variants.catalog import check_known

SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.yaml"


@cache
def config_schema() -> dict:
    """The config's JSON Schema, parsed once per process (both the conversion and the validation walk it)."""
    return yaml.safe_load(SCHEMA_PATH.read_text())


def allowed_values(section: str, key: str) -> list:
    """The values the schema allows for ``scales.<scale>.<section>.<key>`` (an ``enum``): the one list of them."""
    return config_schema()["$defs"]["scale"]["properties"][section]["properties"][key]["enum"]


def check_choice(section: str, key: str, value: str) -> str:
    """``value`` if :func:`allowed_values` has it, else a ValueError naming the key, the allowed values and
    ``value``."""
    allowed = allowed_values(section, key)
    if value not in allowed:
        raise ValueError(f"{section}.{key} must be one of {', '.join(allowed)}; got {value!r}")
    return value


class ConfigError(ValueError):
    """A config value is wrong; the message names the key, the bad value and what is allowed."""


def read_yaml(path: str | Path) -> object:
    """Parse a YAML file; a syntax error is one line naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        what = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"config file {path}{where}: not valid YAML ({' '.join(what.split())})") from err


def load_config(path: str | Path) -> dict:
    return checked_config(read_yaml(path), str(path))


def checked_config(config: object, source: str) -> dict:
    """``config`` ready to use: numbers given as strings converted, validated against the schema (errors name
    ``source``), each scale's model resolved against its fidelity profile. The CLI and the workflow both use it."""
    config = coerce_to_schema(config)
    validate_config(config, source=source)
    return resolve_profiles(with_defaults(config))


# What a string must look like to count as a number of each schema type (YAML 1.2 / Python spellings).
_SCALARS = {
    "integer": (re.compile(r"[-+]?\d+"), int),
    "number": (re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"), float),
    "boolean": (re.compile(r"true|false"), lambda text: text == "true"),
}


def coerce_to_schema(config: object) -> object:
    """A copy of ``config`` with strings converted where the schema wants an integer, number or boolean.

    Only strings that spell such a value exactly are converted (``"12"`` -> 12, ``"5e-3"`` -> 0.005,
    ``"false"`` -> False); anything else is left for the schema check to report.
    """
    root = config_schema()

    def walk(value, node):
        while "$ref" in node:  # local refs only: "#/$defs/name"
            node = root["$defs"][node["$ref"].rsplit("/", 1)[1]]
        types = node.get("type")
        for kind in types if isinstance(types, list) else [types]:  # a union: the first type the string spells
            if isinstance(value, str) and kind in _SCALARS and _SCALARS[kind][0].fullmatch(value):
                return _SCALARS[kind][1](value)
        if isinstance(value, list) and isinstance(node.get("items"), dict):
            return [walk(item, node["items"]) for item in value]
        if isinstance(value, dict):
            fallback = node.get("additionalProperties")
            return {
                key: walk(item, node.get("properties", {}).get(key, fallback if isinstance(fallback, dict) else {}))
                for key, item in value.items()
            }
        return value

    return walk(config, root)


def validate_config(config: object, source: str = "config") -> None:
    """Schema check, then names: scale defined, variants and tasks registered, lists non-empty."""
    schema = config_schema()
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ConfigError(f"{source}: invalid value at key '{key}': {err.message}")
    scale = config["scale"]
    if scale != "auto" and scale not in config["scales"]:
        raise ConfigError(f"{source}: key 'scale': {unknown_name('scale', scale, ['auto', *config['scales']])}")
    for key, lookup in (("variants", check_known), ("tasks", get_task)):
        for name in [] if config[key] == "all" else config[key]:
            try:
                lookup(name)
            except ValueError as err:  # the registry's line: the closest name, where the list is
                raise ConfigError(f"{source}: key '{key}': {err}") from None
    profiles = config.get("fidelity_profiles", {})
    for name, scale_def in config["scales"].items():
        profile = scale_def.get("profile")
        if profile is not None and profile not in profiles:
            raise ConfigError(f"{source}: key 'scales.{name}.profile' is {profile!r}; allowed: "
                              f"{', '.join(profiles) or '(none: fidelity_profiles is empty)'}")  # fmt: skip
        for task, overrides in scale_def["task_overrides"].items():
            try:
                task_settings(task, scale_def["grid"], overrides)
            except ValueError as err:
                raise ConfigError(f"{source}: key 'scales.{name}.task_overrides.{task}': {err}") from err


def with_defaults(config: dict) -> dict:
    """Top-level keys the config may leave out, set to their schema ``default`` (in place)."""
    for key, node in config_schema()["properties"].items():
        if "default" in node:
            config.setdefault(key, node["default"])
    return config


def resolve_profiles(config: dict) -> dict:
    """Each scale's ``model`` = its fidelity profile's choices overridden by its own keys (in place; idempotent)."""
    for scale_def in config["scales"].values():
        profile = config.get("fidelity_profiles", {}).get(scale_def.get("profile"), {})
        scale_def["model"] = {**profile, **scale_def["model"]}
    return config
