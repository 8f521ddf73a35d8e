"""What this machine offers, asked without importing torch or triton (so the Snakefile can ask too)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache

# nvidia-smi answers in well under a second on a healthy machine; a hung driver must not hang the workflow's start.
NVIDIA_SMI_TIMEOUT_S = 10
# `nvidia-smi -L`: "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5a1b...)"; MIG devices are indented lines below it.
_GPU_LINE = re.compile(r"^GPU (\d+): (.+) \(UUID: (\S+)\)$", re.M)


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    uuid: str


class NvidiaSmiError(RuntimeError):
    """nvidia-smi is installed but failed, hung or listed nothing readable; the message says which, in one line."""


def nvidia_gpus() -> list[Gpu]:
    """Every GPU ``nvidia-smi -L`` lists (it ignores CUDA_VISIBLE_DEVICES); [] where nvidia-smi is not installed.

    Asked once per process and nvidia-smi path (the scale's auto choice and the GPU slot plan share the answer).
    Raises NvidiaSmiError when it exits non-zero, runs past NVIDIA_SMI_TIMEOUT_S or prints no GPU line.
    """
    path = shutil.which("nvidia-smi")
    if path is None:
        return []
    gpus, error = _nvidia_smi_listing(path)
    if error:
        raise NvidiaSmiError(error)
    return list(gpus)


@cache
def _nvidia_smi_listing(path: str) -> tuple[tuple[Gpu, ...], str | None]:
    """``(gpus, None)`` or ``((), why it failed)``: a failure is cached too, so a hung nvidia-smi costs one timeout."""
    try:
        out = subprocess.run([path, "-L"], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return (), f"nvidia-smi -L did not answer within {NVIDIA_SMI_TIMEOUT_S} s (a hung driver?)"
    except OSError as err:
        return (), f"nvidia-smi -L could not start ({err.strerror or err})"
    said = " ".join((out.stderr.strip() or out.stdout.strip()).split())[:200]
    if out.returncode != 0:
        return (), f"nvidia-smi -L failed (exit {out.returncode}: {said or 'no output'})"
    gpus = tuple(Gpu(int(i), name.strip(), uuid) for i, name, uuid in _GPU_LINE.findall(out.stdout))
    if not gpus:
        return (), f"nvidia-smi -L listed no GPU ({said or 'no output'})"
    return gpus, None


def nvidia_gpu_visible() -> bool:
    """True when ``nvidia-smi -L`` lists a GPU (False where it fails: the scale's auto choice then picks the CPU)."""
    try:
        return bool(nvidia_gpus())
    except NvidiaSmiError:
        return False


def triton_interpreter_requested() -> bool:
    """Whether ``TRITON_INTERPRET`` asks Triton to run kernels in its CPU interpreter (any value but empty, 0, false,
    off, no — how Triton itself reads it)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() not in ("", "0", "false", "off", "no")
