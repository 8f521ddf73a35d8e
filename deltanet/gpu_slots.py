"""GPU slots of one machine: which GPU a local job uses, held by a lock for the job's whole life.

Snakemake's local executor counts ``resources: gpu`` but never says which GPU a job gets, so every job would open
``cuda:0``. Slots = the GPUs this machine offers (``nvidia-smi -L``, restricted by a CUDA_VISIBLE_DEVICES the user
set) x jobs per GPU. The workflow makes the plan (:func:`plan_slots`), caps its ``gpu`` resource at the slot count
and hands the plan to its jobs in the environment (``SLOTS_ENV``); each GPU job starts under ``deltanet gpu-slot``
(:func:`run_in_slot`), which takes the first free slot with an exclusive ``flock`` on that slot's lock file, sets
CUDA_VISIBLE_DEVICES to its GPU, logs the GPU and execs the job with the lock's descriptor open. The kernel drops the
lock when the job's last process ends, however it ends (kill -9 included): no stale slot, nothing to clean up.
Under a cluster executor ``SLOTS_ENV`` is unset and the job keeps the scheduler's CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from deltanet.machine import Gpu

SLOTS_ENV = "DELTANET_GPU_SLOTS"
POLL_S = 0.5


class SlotError(ValueError):
    """The GPU slots cannot be planned; the message names the bad value and what is allowed, in one line."""


@dataclass(frozen=True)
class SlotPlan:
    """``gpus``: (CUDA_VISIBLE_DEVICES value that selects it, name) per usable GPU; ``visible``: the user's own
    CUDA_VISIBLE_DEVICES (None: unset); ``directory``: where the slots' lock files live."""

    gpus: tuple[tuple[str, str], ...]
    jobs_per_gpu: int
    visible: str | None
    directory: str

    @property
    def slots(self) -> list[tuple[str, str]]:
        """One (GPU, name) per slot, each GPU's first slot before any GPU's second: jobs spread before they pack."""
        return [gpu for _ in range(self.jobs_per_gpu) for gpu in self.gpus]

    def describe(self, at_a_time: int) -> str:
        gpus = ", ".join(f"{n} × {name}" for name, n in Counter(name for _, name in self.gpus).items())
        visible = "CUDA_VISIBLE_DEVICES unset" if self.visible is None else f"CUDA_VISIBLE_DEVICES={self.visible}"
        per_gpu = f"{self.jobs_per_gpu} job{'s' if self.jobs_per_gpu > 1 else ''} per GPU"
        return (f"GPU plan: {gpus} ({visible}), {per_gpu} → {at_a_time} "
                f"train job{'s' if at_a_time > 1 else ''} at a time")  # fmt: skip

    def to_env(self) -> str:
        return json.dumps({"gpus": self.gpus, "jobs_per_gpu": self.jobs_per_gpu, "directory": self.directory})

    @classmethod
    def from_env(cls, text: str) -> SlotPlan:
        data = json.loads(text)
        return cls(tuple(map(tuple, data["gpus"])), data["jobs_per_gpu"], None, data["directory"])


def plan_slots(gpus: list[Gpu], jobs_per_gpu: int, visible: str | None, directory: str) -> SlotPlan:
    """The slots on ``gpus`` (as ``nvidia-smi -L`` lists them), restricted to those ``visible`` names; ``jobs_per_gpu``
    is the config's (>= 1, checked by its schema).

    ``visible`` is the user's CUDA_VISIBLE_DEVICES: indices or (prefixes of) UUIDs, as CUDA reads it. A job gets the
    user's own entry, so it means to CUDA what it meant to the user. An entry nvidia-smi does not list, a repeated
    one, or a value that hides every GPU is a SlotError (CUDA would silently drop it and what follows).
    """
    if visible is None:
        return SlotPlan(tuple((str(g.index), g.name) for g in gpus), jobs_per_gpu, None, directory)
    listed = ", ".join(str(g.index) for g in gpus)
    chosen: list[tuple[str, str]] = []
    seen: set[int] = set()
    for entry in [e.strip() for e in visible.split(",") if e.strip()]:
        matches = [g for g in gpus if entry == str(g.index) or (entry.startswith("GPU-") and g.uuid.startswith(entry))]
        if len(matches) != 1:
            raise SlotError(f"CUDA_VISIBLE_DEVICES={visible} names GPU {entry}, which nvidia-smi -L does not list "
                            f"(it lists {listed}; or use their UUIDs): unset it or name listed GPUs")  # fmt: skip
        if matches[0].index in seen:
            raise SlotError(f"CUDA_VISIBLE_DEVICES={visible} names GPU {entry} twice: name each GPU once")
        seen.add(matches[0].index)
        chosen.append((entry, matches[0].name))
    if not chosen:
        raise SlotError(f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU: unset it, or name GPUs from "
                        f"nvidia-smi -L ({listed})")  # fmt: skip
    return SlotPlan(tuple(chosen), jobs_per_gpu, visible, directory)


def lock_file(directory: str, gpu: str, k: int) -> Path:
    return Path(directory) / f"gpu{re.sub(r'[^A-Za-z0-9-]', '_', gpu)}-{k}.lock"


def take_slot(plan: SlotPlan) -> tuple[int, int, str, str]:
    """``(locked fd, slot number, GPU, name)`` of the first free slot, waiting while every slot is taken.

    The workflow never starts more GPU jobs than slots, so a wait means another run on this machine holds them.
    """
    Path(plan.directory).mkdir(parents=True, exist_ok=True)
    slots = plan.slots
    waiting = False
    while True:
        for number, (gpu, name) in enumerate(slots):
            fd = os.open(lock_file(plan.directory, gpu, number // len(plan.gpus)), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return fd, number, gpu, name
        if not waiting:
            print(f"all {len(slots)} GPU slots in {plan.directory} are held (by another run on this machine?): "
                  "waiting for one", flush=True)  # fmt: skip
            waiting = True
        time.sleep(POLL_S)


def run_in_slot(command: list[str], gpus_needed: int) -> None:
    """Exec ``command``; a job that needs a GPU and has a slot plan in ``SLOTS_ENV`` first takes a slot and sees only
    its GPU. The job's process inherits the lock, so the slot is held exactly as long as the job runs."""
    plan_text = os.environ.get(SLOTS_ENV)
    if gpus_needed > 0 and plan_text:
        plan = SlotPlan.from_env(plan_text)
        fd, number, gpu, name = take_slot(plan)
        os.set_inheritable(fd, True)
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        print(f"GPU slot {number + 1} of {len(plan.slots)}: GPU {gpu} ({name}), CUDA_VISIBLE_DEVICES={gpu}", flush=True)
    os.execvp(command[0], command)
