"""What a run selects from a valid config: the scale (``auto`` probes for a GPU) and the variant and task names."""

from __future__ import annotations

from deltanet.machine import nvidia_gpu_visible
from deltanet.tasks import TASK_IDS
from deltanet.variants.catalog import variant_names


def resolve_scale(config: dict) -> str:
    """The scale name to run: ``config['scale']``, or for ``auto`` full with an NVIDIA GPU and tiny without."""
    if config["scale"] != "auto":
        return config["scale"]
    return "full" if nvidia_gpu_visible() else "tiny"


def selected(config: dict, key: str) -> list[str]:
    """The variant or task names selected by ``config[key]`` (``all`` expands to every registered name)."""
    known = variant_names() if key == "variants" else list(TASK_IDS)
    return known if config[key] == "all" else list(config[key])
