"""The device a training process runs on: ``--device auto|cpu|cuda`` of ``deltanet train``, ``deltanet smoke`` and
the training benchmarks, with the process-wide settings that go with it. Importing it imports no torch, so a
command can offer :data:`DEVICE_CHOICES` before it loads torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deltanet.names import unknown_name

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def training_device(name: str) -> torch.device:
    """``auto`` -> CUDA when torch sees a device, else the CPU; ``cpu`` / ``cuda`` as named.

    Raises ValueError naming the value for a name not in :data:`DEVICE_CHOICES`, or ``cuda`` without a CUDA
    device. Sets the fp32 matmul precision to ``"high"`` for the whole process (TF32 on NVIDIA GPUs from Ampere on,
    nothing on a CPU), so every command that trains computes alike.
    """
    import torch

    if name not in DEVICE_CHOICES:
        raise ValueError(unknown_name("device", name, DEVICE_CHOICES))
    cuda = torch.cuda.is_available()
    if name == "cuda" and not cuda:
        raise ValueError("device 'cuda', but torch sees no CUDA device (allowed here: auto, cpu)")
    torch.set_float32_matmul_precision("high")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and cuda) else "cpu")
