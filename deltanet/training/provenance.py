"""Where a row came from: project git state, library versions, device, file hashes, peak memory."""

from __future__ import annotations

import hashlib
import platform
import resource
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

import torch

from deltanet.config import REPO_ROOT


@cache
def git_state(root: Path = REPO_ROOT) -> tuple[str, bool]:
    """(commit, dirty) of the project checkout; ("unknown", False) outside a git repository or without git.

    Dirty = ``git status --porcelain`` lists anything (modified, staged or untracked-but-not-ignored files).
    """
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30
        )
        if commit.returncode != 0:
            return "unknown", False
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown", False
    return commit.stdout.strip(), bool(status.stdout.strip())


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "none"


@cache
def versions() -> dict[str, str]:
    return {
        "torch_version": torch.__version__,
        "triton_version": package_version("triton"),  # metadata only: importing triton costs seconds
        "python_version": platform.python_version(),
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {model or platform.processor() or platform.machine()}"


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: max memory allocated by tensors since the run started. CPU: the process's max RSS (whole job)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
