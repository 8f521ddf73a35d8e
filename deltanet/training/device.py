"""The device a training process runs on: ``--device auto|cpu|cuda`` of ``deltanet train``, ``deltanet smoke`` and
the training benchmarks, with the process-wide settings that go with it. Importing it imports no torch, so a
command can offer :data:`DEVICE_CHOICES` before it loads torch."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from deltanet.machine import NvidiaSmiError, nvidia_gpus
from deltanet.names import unknown_name

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def training_device(name: str, scale_gpus: int = 0) -> torch.device:
    """``auto`` -> CUDA when torch sees a device, else the CPU; ``cpu`` / ``cuda`` as named.

    Raises ValueError naming the value for a name not in :data:`DEVICE_CHOICES`; and, in one line saying what was
    found and the fix, for ``cuda`` without a CUDA device or ``auto`` without one when the scale asks for GPUs
    (``scale_gpus``: its ``resources.gpu``): a GPU scale never trains on a CPU unless ``cpu`` is named. Sets the fp32
    matmul precision to ``"high"`` for the whole process (TF32 on NVIDIA GPUs from Ampere on, nothing on a CPU), so
    every command that trains computes alike.
    """
    import torch

    if name not in DEVICE_CHOICES:
        raise ValueError(unknown_name("device", name, DEVICE_CHOICES))
    cuda = torch.cuda.is_available()
    if not cuda and (name == "cuda" or (name == "auto" and scale_gpus > 0)):
        raise ValueError(no_cuda(name, scale_gpus, torch.version.cuda))
    torch.set_float32_matmul_precision("high")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and cuda) else "cpu")


def no_cuda(name: str, scale_gpus: int, torch_cuda: str | None) -> str:
    """Why there is no CUDA device here, and what to do, in one line."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    found = [f"CUDA_VISIBLE_DEVICES={'unset' if visible is None else repr(visible)}",
             f"torch {'built without CUDA' if torch_cuda is None else f'built for CUDA {torch_cuda}'}"]  # fmt: skip
    try:
        gpus = nvidia_gpus()
        found.append(f"nvidia-smi lists {len(gpus)} GPU(s)" if gpus else "no nvidia-smi here")
    except NvidiaSmiError as err:
        found.append(str(err))
    wanted = f"device '{name}'" if name == "cuda" else f"this scale asks for {scale_gpus} GPU(s) (resources.gpu)"
    return (f"{wanted}, but torch sees no CUDA device ({'; '.join(found)}): run it where a GPU is visible (under "
            "Apptainer with --nv: snakemake --singularity-args=--nv), or name --device cpu to train on the CPU anyway")
