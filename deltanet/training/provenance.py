"""Where a row came from: project git state, library versions, lock and image, device, file hashes, peak memory."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

import torch

from deltanet.hashing import file_sha256
from deltanet.io import write_text_atomic
from deltanet.training.lockfile import read_pins


def checkout_root(package_dir: Path = Path(__file__).resolve().parents[1]) -> Path | None:
    """The project checkout the package runs from (editable install, the workflow's copy); None when installed."""
    root = package_dir.parent
    return root if (root / "pyproject.toml").is_file() else None


CHECKOUT = checkout_root()
# The Dockerfile sets DELTANET_LOCK to the image's copy of the lock it installed; else the checkout's README lock.
LOCK_VARIABLE = "DELTANET_LOCK"
HOST_LOCK = CHECKOUT / "requirements" / "cpu.txt" if CHECKOUT else None
# Apptainer (and Singularity before it) names the running image file in these.
IMAGE_VARIABLES = ("APPTAINER_CONTAINER", "SINGULARITY_CONTAINER")


@cache
def git_state(root: Path | None = CHECKOUT) -> tuple[str, bool]:
    """(commit, dirty) of the project checkout; ("unknown", False) for an installed package, outside a git
    repository or without git.

    Dirty = ``git status --porcelain`` lists anything (modified, staged or untracked-but-not-ignored files).
    """
    if root is None:
        return "unknown", False
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


@cache
def environment_files() -> dict[str, str]:
    """The lock this environment was installed from and the container image it runs in, each by sha256.

    lock_file: $DELTANET_LOCK, else the checkout's requirements/cpu.txt ("none" for an installed package).
    lock_sha256: its hash if every version it pins is the installed one, else "none" (e.g. a venv installed by
    hand). image_sha256: the image file Apptainer names in $APPTAINER_CONTAINER / $SINGULARITY_CONTAINER; "none"
    outside a container, "unreadable: <path>" if not a file.
    """
    # resolved: the image's DELTANET_LOCK is a link to the lock it installed (Dockerfile)
    lock = Path(os.environ[LOCK_VARIABLE]).resolve() if os.environ.get(LOCK_VARIABLE) else HOST_LOCK
    matches = lock is not None and lock.is_file() and all(
        package_version(name) == pin.version for name, pin in read_pins(lock.read_text()).items()
    )
    in_checkout = lock is not None and CHECKOUT is not None and lock.is_relative_to(CHECKOUT)
    image = next((os.environ[name] for name in IMAGE_VARIABLES if os.environ.get(name)), None)
    if image is None:
        image_sha256 = "none"
    else:
        image_sha256 = image_file_sha256(Path(image)) if Path(image).is_file() else f"unreadable: {image}"
    return {
        "lock_file": "none" if lock is None else str(lock.relative_to(CHECKOUT) if in_checkout else lock),
        "lock_sha256": file_sha256(lock) if matches else "none",
        "image_sha256": image_sha256,
    }


def image_file_sha256(image: Path) -> str:
    """sha256 of a (multi-GB) image file, hashed once: ``<image>.sha256`` keeps "hash size mtime_ns" beside it and
    is trusted while the size and modification time still match (every job of a run would otherwise re-read it)."""
    memo = image.with_name(image.name + ".sha256")
    stat = image.stat()
    stamp = f"{stat.st_size} {stat.st_mtime_ns}"
    try:
        digest, recorded = memo.read_text().split(" ", 1)
        if recorded.strip() == stamp:
            return digest
    except (OSError, ValueError):
        pass
    digest = file_sha256(image)
    try:  # best effort: a read-only image folder just means hashing again next time
        write_text_atomic(memo, f"{digest} {stamp}\n")
    except OSError:
        pass
    return digest


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
    """CUDA: max memory allocated by tensors since the last :func:`reset_peak_memory` (a group starts it). CPU: the
    process's max RSS (whole job)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def peak_reserved_mb(device: torch.device) -> float:
    """CUDA: max memory the caching allocator held (tensors, cached blocks, CUDA graph pools) since the last
    :func:`reset_peak_memory`: what an out-of-memory is about. NaN on a CPU (no such allocator)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_reserved(device) / 2**20
    return float("nan")
