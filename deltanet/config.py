"""Load and validate ``config.yaml``; resolve the scale.

Structure checks come from ``workflow/schemas/config.schema.yaml`` (JSON Schema 2020-12, the same file the Snakefile
validates with); name checks (variants, tasks, scale) come from the registries. Every error names the key.
"""

from __future__ import annotations

import hashlib
import json
import logging
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


def load_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    validate_config(config, source=str(path))
    return resolve_profiles(config)


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
