"""A group's checkpoint file: one payload (built by ``deltanet/training/loop.py``), written atomically, read back
onto the group's device, and never deleted when it cannot be used.

- :func:`save_checkpoint` writes beside the target and renames, so a kill or a full disk leaves the previous file
  whole; a failed write raises :class:`OutputWriteError` (one line: the file and the cause).
- :func:`read_checkpoint` raises :class:`UnusableCheckpoint` only for a file that cannot be read or belongs to other
  runs (another format, another group); the caller then moves it aside (:func:`set_aside`) and starts over. Every
  tensor of the payload lands on the group's device, except the CPU generator states of the shuffles.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from deltanet.io import atomic_path

CHECKPOINT_FORMAT = 3  # v2: one file per fused group; v3: members keyed by run index, states on the group's device


class OutputWriteError(OSError):
    """A checkpoint or run file could not be written (disk full, file size limit, permissions)."""


class UnusableCheckpoint(ValueError):
    """A checkpoint that cannot be read or is not this group's; the message says why."""


def save_checkpoint(path: Path, payload: dict) -> None:
    """Serialised in memory, then written by Python, so a full disk is reported as the OS says it (torch's own
    writer reports it as an unexpected file position)."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomically(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()), "checkpoint")


def write_atomically(path: Path, write, what: str) -> None:
    """``write(tmp)`` then rename onto ``path``; any failure leaves ``path`` as it was and raises
    :class:`OutputWriteError` naming it (torch and pyarrow report a full disk in their own exception types)."""
    try:
        with atomic_path(path) as tmp:
            write(tmp)
    except Exception as err:  # noqa: BLE001  whatever the writer raised, the cause is named in one line
        cause = " ".join(str(err).split())[:300] or type(err).__name__
        message = f"could not write the {what} {path} ({cause}); any earlier file there is intact"
        raise OutputWriteError(message) from err


def read_checkpoint(path: Path, runs: list[int], device: torch.device) -> dict:
    """The payload of ``path`` for the group of run indices ``runs``, its tensors on ``device``."""
    try:
        # our own file: it holds generator states and Python records, hence weights_only=False
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001  truncated, garbage, or not a torch file: unreadable either way
        raise UnusableCheckpoint(f"unreadable ({type(err).__name__}: {' '.join(str(err).split())[:200]})") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise UnusableCheckpoint(f"checkpoint format {found}, this code reads {CHECKPOINT_FORMAT}")
    if payload["runs"] != runs:
        raise UnusableCheckpoint(f"a checkpoint of runs {payload['runs']}; this group has {runs}")
    shuffles = payload.pop("shuffles")  # torch.Generator.set_state takes CPU byte tensors only
    return {**to_device(payload, device), "shuffles": shuffles}


def to_device(obj, device: torch.device):
    """``obj`` with every tensor in its dicts, lists and tuples moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def set_aside(path: Path) -> Path:
    """Rename ``path`` to the first free ``<name>.unusable[.N]`` beside it and return the new path."""
    target, n = path.with_name(path.name + ".unusable"), 1
    while target.exists():
        target, n = path.with_name(f"{path.name}.unusable.{n}"), n + 1
    path.rename(target)
    return target
