"""GPU slots of one machine: which GPU a local job uses, held by a lock for the job's whole life.

Snakemake's local executor counts ``resources: gpu`` but never says which GPU a job gets, so every job would open
``cuda:0``. Slots = the GPUs this machine offers (``nvidia-smi -L``, restricted by a CUDA_VISIBLE_DEVICES the user
set) x jobs per GPU. The workflow makes the plan (:func:`plan_slots`), caps its ``gpu`` resource at the slot count
and hands the plan to each GPU job as an argument of its command (``deltanet gpu-slot --plan``: it survives
Apptainer's ``--cleanenv``). The job (:func:`run_in_slot`) takes the first free slot with an exclusive ``flock`` on
that slot's lock file, sees only that GPU (``CUDA_VISIBLE_DEVICES`` = its nvidia-smi index under
``CUDA_DEVICE_ORDER=PCI_BUS_ID``, the order nvidia-smi numbers in), logs it and execs the job with the lock's
descriptor open. The kernel drops the lock when the job's last process ends, however it ends (kill -9 included).

The locks are the machine's, not a checkout's: one folder (config ``gpu_lock_dir``, default
:data:`MACHINE_LOCK_DIR`) and one file per GPU UUID and slot, so two checkouts, or two runs naming GPUs one by index
and one by UUID, never share a slot. Under a cluster executor there is no plan and the job keeps the scheduler's GPU.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from deltanet.machine import Gpu

MACHINE_LOCK_DIR = "/tmp/deltanet-gpu-slots"  # /tmp: on every Linux machine, and inside Apptainer images by default
POLL_S = 0.5


class SlotError(ValueError):
    """The GPU slots cannot be planned or taken; the message names the bad value and what is allowed, in one line."""


@dataclass(frozen=True)
class SlotPlan:
    """``gpus``: (nvidia-smi index, UUID, name) per usable GPU; ``visible``: the user's own CUDA_VISIBLE_DEVICES
    (None: unset); ``directory``: where the machine's slot locks live."""

    gpus: tuple[tuple[int, str, str], ...]
    jobs_per_gpu: int
    visible: str | None
    directory: str

    @property
    def slots(self) -> list[tuple[int, str, str]]:
        """One GPU per slot, each GPU's first slot before any GPU's second: jobs spread before they pack."""
        return [gpu for _ in range(self.jobs_per_gpu) for gpu in self.gpus]

    def describe(self, at_a_time: int, note: str = "") -> str:
        gpus = ", ".join(f"{n} × {name}" for name, n in Counter(name for _, _, name in self.gpus).items())
        visible = "CUDA_VISIBLE_DEVICES unset" if self.visible is None else f"CUDA_VISIBLE_DEVICES={self.visible}"
        per_gpu = f"{self.jobs_per_gpu} job{'s' if self.jobs_per_gpu > 1 else ''} per GPU"
        return (f"GPU plan: {gpus} ({visible}), {per_gpu} → {at_a_time} "
                f"train job{'s' if at_a_time > 1 else ''} at a time{note}; slot locks in {self.directory}")  # fmt: skip

    def to_json(self) -> str:
        return json.dumps({"gpus": self.gpus, "jobs_per_gpu": self.jobs_per_gpu, "directory": self.directory})

    @classmethod
    def from_json(cls, text: str) -> SlotPlan:
        data = json.loads(text)
        return cls(tuple((int(i), u, n) for i, u, n in data["gpus"]), data["jobs_per_gpu"], None, data["directory"])


def plan_slots(gpus: list[Gpu], jobs_per_gpu: int, visible: str | None, directory: str) -> SlotPlan:
    """The slots on ``gpus`` (as ``nvidia-smi -L`` lists them), restricted to those ``visible`` names; ``jobs_per_gpu``
    is the config's (>= 1, checked by its schema); ``directory``, the machine's lock folder, must take locks.

    ``visible`` is the user's CUDA_VISIBLE_DEVICES: nvidia-smi indices (the PCI bus order jobs run under) or
    (prefixes of) UUIDs. An entry nvidia-smi does not list, a repeated one, or a value that hides every GPU is a
    SlotError (CUDA would silently drop it and what follows).
    """
    check_lock_dir(directory)
    listed = ", ".join(str(g.index) for g in gpus)
    chosen: list[Gpu] = []
    entries = [str(g.index) for g in gpus] if visible is None else [e.strip() for e in visible.split(",") if e.strip()]
    for entry in entries:
        matches = [g for g in gpus if entry == str(g.index) or (entry.startswith("GPU-") and g.uuid.startswith(entry))]
        if len(matches) != 1:
            raise SlotError(f"CUDA_VISIBLE_DEVICES={visible} names GPU {entry}, which nvidia-smi -L does not list "
                            f"(it lists {listed}; or use their UUIDs): unset it or name listed GPUs")  # fmt: skip
        if matches[0] in chosen:
            raise SlotError(f"CUDA_VISIBLE_DEVICES={visible} names GPU {entry} twice: name each GPU once")
        chosen.append(matches[0])
    if not chosen:
        raise SlotError(f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU: unset it, or name GPUs from "
                        f"nvidia-smi -L ({listed})")  # fmt: skip
    return SlotPlan(tuple((g.index, g.uuid, g.name) for g in chosen), jobs_per_gpu, visible, directory)


def check_lock_dir(directory: str) -> None:
    """Make the machine's lock folder (open to every user: sticky, world-writable, as /tmp) and check that it takes
    ``flock`` locks (some network file systems do not); a SlotError says which and what to do."""
    try:
        fd = os.open(make_lock_dir(directory) / "probe.lock", os.O_RDONLY | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    except BlockingIOError:
        return  # another run's probe holds it: locks work
    except OSError as err:
        raise SlotError(f"GPU slot locks cannot be taken in {directory} ({err.strerror or err}): set gpu_lock_dir "
                        "in config.yaml to a folder on a local file system every run on this machine sees") from err


def make_lock_dir(directory: str) -> Path:
    """The lock folder, made open to every user of the machine where it is new (sticky and world-writable, as /tmp)."""
    path = Path(directory)
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o1777)
    return path


def lock_file(directory: str, uuid: str, k: int) -> Path:
    return Path(directory) / f"{uuid}-slot{k}.lock"


def take_slot(plan: SlotPlan) -> tuple[int, int, tuple[int, str, str]]:
    """``(locked fd, slot number, GPU)`` of the first free slot, waiting while every slot is taken.

    The workflow never starts more GPU jobs than slots, so a wait means another run on this machine holds them.
    """
    slots, waiting = plan.slots, False
    make_lock_dir(plan.directory)
    while True:
        for number, gpu in enumerate(slots):
            path = lock_file(plan.directory, gpu[1], number // len(plan.gpus))
            fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)  # read-only: any user may lock another's file
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            except OSError as err:
                os.close(fd)
                raise SlotError(f"GPU slot lock {path} cannot be taken ({err.strerror or err}): set gpu_lock_dir "
                                "in config.yaml to a folder on a local file system") from err  # fmt: skip
            return fd, number, gpu
        if not waiting:
            print(f"all {len(slots)} GPU slots in {plan.directory} are held (by another run on this machine?): "
                  "waiting for one", flush=True)  # fmt: skip
            waiting = True
        time.sleep(POLL_S)


def run_in_slot(command: list[str], gpus_needed: int, plan_text: str | None) -> None:
    """Exec ``command``; a job that needs a GPU and has a slot plan (``plan_text``, the workflow's JSON) first takes a
    slot and sees only its GPU. The job's process inherits the lock, so the slot is held exactly as long as it runs."""
    if gpus_needed > 0 and plan_text:
        plan = SlotPlan.from_json(plan_text)
        fd, number, (index, uuid, name) = take_slot(plan)
        os.set_inheritable(fd, True)
        os.environ.update(CUDA_DEVICE_ORDER="PCI_BUS_ID", CUDA_VISIBLE_DEVICES=str(index))
        print(f"GPU slot {number + 1} of {len(plan.slots)}: GPU {index} ({name}, {uuid}), CUDA_DEVICE_ORDER=PCI_BUS_ID "
              f"CUDA_VISIBLE_DEVICES={index}", flush=True)  # fmt: skip
    os.execvp(command[0], command)
