"""Load and validate ``config.yaml``; resolve the scale.

Structure checks come from ``workflow/schemas/config.schema.yaml`` (JSON Schema 2020-12, the same file the Snakefile
validates with); name checks (variants, tasks, scale) come from the registries. Every error names the key.

Before the checks, numbers and booleans written as strings are converted where the schema asks for them: Snakemake
passes the items of a ``--config`` list as strings (``seeds=[1,2]`` gives ``['1', '2']``), and YAML 1.1 reads
``5e-3`` (no dot in the mantissa) as a string.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
log = logging.getLogger(__name__)


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
    config = coerce_to_schema(read_yaml(path))
    validate_config(config, source=str(path))
    return resolve_profiles(config)


# What a string must look like to count as a number of each schema type (YAML 1.2 / Python spellings).
_SCALARS = {
    "integer": (re.compile(r"[-+]?\d+"), int),
    "number": (re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"), float),
    "boolean": (re.compile(r"true|false"), lambda text: text == "true"),
}


def coerce_to_schema(config: object, schema: dict | None = None) -> object:
    """A copy of ``config`` with strings converted where the schema wants an integer, number or boolean.

    Only strings that spell such a value exactly are converted (``"12"`` -> 12, ``"5e-3"`` -> 0.005,
    ``"false"`` -> False); anything else is left for the schema check to report.
    """
    root = yaml.safe_load(SCHEMA_PATH.read_text()) if schema is None else schema

    def walk(value, node):
        while "$ref" in node:  # local refs only: "#/$defs/name"
            node = root["$defs"][node["$ref"].rsplit("/", 1)[1]]
        if isinstance(value, str) and node.get("type") in _SCALARS:
            pattern, convert = _SCALARS[node["type"]]
            return convert(value) if pattern.fullmatch(value) else value
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
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ConfigError(f"{source}: invalid value at key '{key}': {err.message}")
    from deltanet.tasks import TASK_IDS
    from deltanet.variants import variant_names

    scale = config["scale"]
    if scale != "auto" and scale not in config["scales"]:
        raise ConfigError(f"{source}: key 'scale' is {scale!r}; allowed: auto, {', '.join(config['scales'])}")
    for key, known in (("variants", variant_names()), ("tasks", list(TASK_IDS))):
        value = config[key]
        if value != "all":
            unknown = [name for name in value if name not in known]
            if unknown:
                raise ConfigError(f"{source}: key '{key}' has unknown names {unknown}; allowed: all, {', '.join(known)}")
    from deltanet.tasks import task_settings

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


def resolve_profiles(config: dict) -> dict:
    """Each scale's ``model`` = its fidelity profile's choices overridden by its own keys (in place; idempotent)."""
    for scale_def in config["scales"].values():
        profile = config.get("fidelity_profiles", {}).get(scale_def.get("profile"), {})
        scale_def["model"] = {**profile, **scale_def["model"]}
    return config


def nvidia_gpu_visible() -> bool:
    """True when ``nvidia-smi -L`` lists a GPU (cheap: no torch import in the Snakefile)."""
    if not shutil.which("nvidia-smi"):
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def resolve_scale(config: dict) -> str:
    """The scale name to run: ``config['scale']``, or for ``auto`` full with an NVIDIA GPU and tiny without."""
    if config["scale"] != "auto":
        return config["scale"]
    return "full" if nvidia_gpu_visible() else "tiny"


def selected(config: dict, key: str) -> list[str]:
    """The variant or task names selected by ``config[key]`` (``all`` expands to every registered name)."""
    from deltanet.tasks import TASK_IDS
    from deltanet.variants import variant_names

    known = variant_names() if key == "variants" else list(TASK_IDS)
    return known if config[key] == "all" else list(config[key])


def config_hash(data: object) -> str:
    """sha256 of the canonical JSON of ``data`` (stable across key order)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
