"""A group's checkpoint: what a resume needs, built, written and read here only.

A :class:`Checkpoint` holds every run's record (``states``, by run index) and, while some runs still train,
their :class:`LiveMembers` (run indices in stack order, stacked parameters, optimiser state, shuffle generators).
The last epoch's checkpoint has no live members: every run has its result, and a resume returns them.

- :func:`save_checkpoint` writes beside the target and renames, so a kill or a full disk leaves the previous file
  whole; a failed write raises :class:`OutputWriteError` (one line: the file and the cause).
- :func:`read_checkpoint` raises :class:`UnusableCheckpoint` only for a file that cannot be read or belongs to other
  runs (another format, another group); the caller then moves it aside (``deltanet.io.set_aside``) and starts
  over. Every tensor lands on the group's device, except the CPU generator states of the shuffles.
- :func:`split_checkpoint` cuts a group's checkpoint into one per part of the group (an out-of-memory split), so
  each part resumes at the epoch the group reached.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path

import torch

from deltanet.io import atomic_path, remove
from deltanet.training.optim import select_members

CHECKPOINT_FORMAT = 4  # v2: one file per fused group; v3: members keyed by run index, states on the group's device;
# v4: the live members in one entry, absent once every run has stopped (v3 wrote no shuffles then: unreadable)


class OutputWriteError(OSError):
    """A checkpoint or run file could not be written (disk full, file size limit, permissions)."""


class UnusableCheckpoint(ValueError):
    """A checkpoint that cannot be read or is not this group's; the message says why."""


@dataclass
class LiveMembers:
    """The runs still training, in stack order, and their stacked state (dim 0 of every tensor: the member)."""

    runs: list[int]
    params: dict[str, torch.Tensor]
    optimizer: dict  # StackedAdamW.state_dict()
    shuffles: dict[int, torch.Tensor]  # torch.Generator.get_state() per run: CPU byte tensors

    def select(self, runs: list[int]) -> LiveMembers | None:
        """The members ``runs`` (those of them still live), in stack order; None if none is."""
        keep = [p for p, run in enumerate(self.runs) if run in runs]
        if not keep:
            return None
        return LiveMembers([self.runs[p] for p in keep], {n: t[keep] for n, t in self.params.items()},
                           select_members(self.optimizer, keep), {self.runs[p]: self.shuffles[self.runs[p]]
                                                                  for p in keep})  # fmt: skip


@dataclass
class Checkpoint:
    """A group's state after an epoch: every run's record (``dataclasses.asdict`` of its ``RunState``), the live
    members (None once every run has stopped)."""

    states: dict[int, dict]
    live: LiveMembers | None


def save_checkpoint(path: Path, runs: list[int], checkpoint: Checkpoint) -> None:
    """Serialised in memory, then written by Python, so a full disk is reported as the OS says it (torch's own
    writer reports it as an unexpected file position). ``runs``: the group's run indices, checked on read."""
    buffer = io.BytesIO()
    live = None if checkpoint.live is None else dataclasses.asdict(checkpoint.live)
    torch.save({"format": CHECKPOINT_FORMAT, "runs": runs, "states": checkpoint.states, "live": live}, buffer)
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


def read_checkpoint(path: Path, runs: list[int], device: torch.device) -> Checkpoint:
    """The checkpoint at ``path`` of the group of run indices ``runs``, its tensors on ``device``."""
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
    live = payload["live"]
    if live is not None:  # torch.Generator.set_state takes CPU byte tensors only
        live = LiveMembers(**{**to_device(live, device), "shuffles": live["shuffles"]})
    return Checkpoint(to_device(payload["states"], device), live)


def split_checkpoint(path: Path, parts: list[tuple[list[int], Path]]) -> None:
    """Write the checkpoint of each part ``(run indices, path)`` of the group whose checkpoint is ``path``, then
    remove ``path``. A kill in between leaves ``path`` (the whole group resumes) or every part (each resumes)."""
    whole = read_checkpoint(path, [run for runs, _ in parts for run in runs], torch.device("cpu"))
    for runs, part in parts:
        states = {run: whole.states[run] for run in runs}
        live = None if whole.live is None else whole.live.select(runs)
        save_checkpoint(part, runs, Checkpoint(states, live))
    remove(path)


def to_device(obj, device: torch.device):
    """``obj`` with every tensor in its dicts, lists and tuples moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj
