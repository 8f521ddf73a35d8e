"""What this machine offers, asked without importing torch or triton (so the Snakefile can ask too)."""

from __future__ import annotations

import os
import shutil
import subprocess


def nvidia_gpu_visible() -> bool:
    """True when ``nvidia-smi -L`` lists a GPU."""
    if not shutil.which("nvidia-smi"):
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def triton_interpreter_requested() -> bool:
    """Whether ``TRITON_INTERPRET`` asks Triton to run kernels in its CPU interpreter (any value but empty, 0, false,
    off, no — how Triton itself reads it)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() not in ("", "0", "false", "off", "no")
