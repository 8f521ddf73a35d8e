"""One variant × task job: every run of the scale, resumable, written to one parquet file.

Runs, in order: each setting of ``task_settings(task, scale.grid, scale.task_overrides[task])`` × each lr × each
weight decay × each seed of ``config["seeds"]``. With ``optim.fuse_runs`` (the default) the unfinished runs of a
setting train together as one fused group (``deltanet/training/loop.py``); off, each run is a group of one; an
integer N, groups of at most N runs. A group that does not fit the GPU is split in two (one line says so) and each
half resumes from its share of the group's checkpoint.

Checkpoint directory (default ``<out>.ckpt/``) while the job is unfinished:

- ``job.json``: the job's identity (variant and its source hash, the hash of the code every job shares, task, scale
  config, seeds, kernels, row and checkpoint formats). A directory left by a *different* job (edited config,
  variant or shared code) is moved aside and named, never resumed or deleted: one run file holds one code's rows.
- ``finished.parquet``: the rows of the finished runs, rewritten atomically after each group, before the group's
  checkpoint is removed.
- ``runs-FFFF-LLLL.pt``: the unfinished group's checkpoint (its runs FFFF…LLLL), rewritten atomically after each
  epoch (``deltanet/training/checkpoint.py``).

A re-invoked job skips finished runs and resumes the unfinished group. ``out`` is written (atomically) only when
every run is done; then the checkpoint directory is removed. SIGTERM (SLURM's time limit, preemption) and a failed
write stop the job with :class:`JobStopped`, whose one line says where a rerun resumes. Every change to files goes
through ``deltanet/io.py``, whose persistence points the crash tests stop the job at (``tests/test_crash_points.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import signal
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from deltanet.hashing import config_hash, file_sha256
from deltanet.io import persistence_point, remove, remove_leftover_temps, set_aside, write_text_atomic
from deltanet.runs import RUN_COLUMNS, SCHEMA_VERSION, validate_runs
from deltanet.tasks import get_task, make_datasets, task_settings
from deltanet.tasks.generator_kit import IGNORE
from deltanet.training.checkpoint import CHECKPOINT_FORMAT, OutputWriteError, split_checkpoint, write_atomically
from deltanet.training.loop import GroupPlan, LossHook, RunPlan, RunState, TensorData, train_group
from deltanet.training.provenance import device_name, environment_files, git_state, versions
from deltanet.variants import get_variant

FINISHED = "finished.parquet"
EXIT_TERMINATED, EXIT_WRITE_FAILED = 128 + signal.SIGTERM, 1


@dataclass
class JobHooks:
    """Test seams of a job; none in normal use. ``after_epoch(epochs done in this invocation)`` runs once an epoch is
    checkpointed and may raise to stop the job as a kill would; ``loss`` is :data:`deltanet.training.loop.LossHook`."""

    after_epoch: Callable[[int], None] | None = None
    loss: LossHook | None = None


@dataclass
class Job:
    variant: str
    task: str
    scale: str
    config: dict
    out: Path
    ckpt_dir: Path
    device: torch.device
    shared_code_sha256: str  # the code every train job runs besides its variant and task (deltanet/import_graph.py)
    cache_dir: Path | None = None


class JobStopped(Exception):
    """The job stopped before its end (SIGTERM, a failed write); the message says why and where a rerun resumes."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class Terminated(BaseException):
    """SIGTERM arrived (SLURM's time limit or a preemption, ``kill``). An interruption like KeyboardInterrupt, not
    an error: no ``except Exception`` on its way (a checkpoint write, say) turns it into one."""


def log(msg: str) -> None:
    print(msg, flush=True)


def chance_level(test_targets: np.ndarray) -> float:
    """Macro accuracy of a uniform random guess over the classes scored in the test set: 1 / #classes."""
    classes = np.unique(test_targets[test_targets != IGNORE])
    return 1.0 / len(classes) if len(classes) else float("nan")


def run_key(setting_id: str, lr: float, wd: float, seed: int) -> tuple:
    return (str(setting_id), float(lr), float(wd), int(seed))


class Progress:
    """Epoch counter for the ETA (an upper bound: every remaining run is assumed to use all its epochs), and where a
    rerun would resume (the group whose checkpoint is being written, and its epochs done)."""

    def __init__(self):
        self.left, self.done, self.t0 = 0, 0, time.perf_counter()  # left: set once the finished runs are known
        self.group, self.ckpt, self.epochs, self.terminated = "", None, None, False

    def epoch(self, epochs: int) -> None:
        self.left, self.done, self.epochs = self.left - 1, self.done + 1, epochs

    def run_ended(self, unused_epochs: int) -> None:
        self.left -= unused_epochs

    def eta(self) -> str:
        if not self.done:
            return "?"
        per_epoch = (time.perf_counter() - self.t0) / self.done
        return str(timedelta(seconds=round(per_epoch * max(self.left, 0))))

    def resume_point(self) -> str:
        if self.ckpt is None or not self.ckpt.exists():
            return f"a rerun starts {self.group or 'the unfinished runs'} over (no checkpoint yet)"
        after = f" after epoch {self.epochs}" if self.epochs is not None else ""
        return f"a rerun resumes {self.group}{after} from {self.ckpt}"


def _prepare_ckpt_dir(ckpt_dir: Path, identity: dict) -> pd.DataFrame | None:
    """Make the checkpoint dir for this job; return the finished rows of an earlier attempt (None if fresh)."""
    marker = ckpt_dir / "job.json"
    wanted = config_hash(identity)
    if marker.exists():
        try:
            found = json.loads(marker.read_text()).get("job_sha256")
        except (OSError, ValueError):
            found = None
        if found != wanted:
            aside = set_aside(ckpt_dir)
            log(f"checkpoint dir {ckpt_dir} belongs to a different job configuration or code: moved to {aside}, "
                "starting afresh")
    if not marker.exists():
        write_text_atomic(marker, json.dumps({"job_sha256": wanted, **identity}, indent=1, default=str))
    finished = ckpt_dir / FINISHED
    if finished.exists():
        df = pd.read_parquet(finished)
        validate_runs(df, str(finished))
        return df
    return None


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    write_atomically(path, lambda tmp: df.to_parquet(tmp, index=False), "run file")


@contextlib.contextmanager
def _sigterm_raises(progress: Progress):
    """Within: SIGTERM raises :class:`Terminated` where the job is (checkpoints are atomic: nothing half-written).
    Python drops an exception raised where it cannot propagate (a finaliser, a callback), so the signal is also
    noted in ``progress`` and the next epoch's end raises it again."""
    def handler(signum, frame):
        progress.terminated = True
        raise Terminated

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set a handler
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_job(job: Job, hooks: JobHooks | None = None) -> None:
    """Train every unfinished run of ``job`` and write ``job.out``; raises :class:`JobStopped` on SIGTERM or a
    failed write, with the line that says where a rerun resumes."""
    progress = Progress()
    try:
        with _sigterm_raises(progress):
            _run_job(job, hooks or JobHooks(), progress)
    except Terminated:
        raise JobStopped(f"stopped by SIGTERM; {progress.resume_point()}", EXIT_TERMINATED) from None
    except OutputWriteError as err:
        raise JobStopped(f"error: {err}; {progress.resume_point()}", EXIT_WRITE_FAILED) from None


def _run_job(job: Job, hooks: JobHooks, progress: Progress) -> None:
    optim = job.config["scales"][job.scale]["optim"]
    variant, task = get_variant(job.variant), get_task(job.task)
    settings, plan = _plan(job)
    rows, finished, provenance = _start(job, variant, plan, progress)
    model_kwargs = {**job.config["scales"][job.scale]["model"], "variant": job.variant,
                    "kernels": job.config["kernels"]}  # fmt: skip

    def on_epoch(group: GroupPlan, run: RunPlan, st: RunState, m: dict) -> None:
        progress.epoch(st.epoch)
        persistence_point(f"progress of run {run.index} after epoch {st.epoch}")
        log(f"  run {run.index}/{group.total} epoch {st.epoch}/{optim['max_epochs']}  loss {m['train_loss']:.4f}  "
            f"test acc {m['acc']:.4f} ppl {m['ppl']:.4g}  {m['steps_per_second']:.1f} it/s  ETA {progress.eta()}")
        if progress.terminated:
            raise Terminated
        if hooks.after_epoch is not None:
            hooks.after_epoch(progress.done)

    def keep_rows(setting, chance: float, group: GroupPlan, results: list[dict]) -> None:
        for run, result in zip(group.runs, results):
            progress.run_ended(optim["max_epochs"] - result["epochs_run"])
            log(f"run {run.index}/{len(plan)} done: {result['stop_reason']}, best epoch {result['best_epoch']}/"
                f"{result['epochs_run']}, test acc {result['test_acc']:.4f} (chance {chance:.4f}) ppl "
                f"{result['test_ppl']:.4g}, {result['wall_seconds']:.1f} s")  # fmt: skip
            rows.append(_row(job, variant.mixer, setting, run, result, provenance))
        _write_parquet(_frame(rows), job.ckpt_dir / FINISHED)

    for setting in settings:
        todo = [RunPlan(index, lr, wd, seed) for index, (s, lr, wd, seed) in enumerate(plan, start=1)
                if s is setting and run_key(s.id, lr, wd, seed) not in finished]  # fmt: skip
        if not todo:
            log(f"{job.task}/{setting.id}: every run finished earlier, skipped")
            continue
        ds = make_datasets(setting, cache_dir=job.cache_dir)
        data, chance = TensorData.from_datasets(ds, job.device), chance_level(np.asarray(ds.test_targets))
        shared = dict(total=len(plan), label=setting.id, vocab_size=int(setting.fields["vocab_size"]),
                      model_kwargs=model_kwargs, autoencoder=task.autoencoder, optim=optim, device=job.device)
        for runs in fused_groups(todo, optim.get("fuse_runs", True)):
            _train_fitting(GroupPlan(runs, **shared), data, job, on_epoch, hooks, progress,
                           lambda group, results: keep_rows(setting, chance, group, results))  # fmt: skip
    df = _frame(rows)
    validate_runs(df, str(job.out))
    _write_parquet(df, job.out)
    log(f"wrote {len(df)} runs to {job.out}")
    _remove_ckpt_dir(job.ckpt_dir)


def fused_groups(runs: list[RunPlan], fuse_runs: bool | int) -> list[list[RunPlan]]:
    """``optim.fuse_runs``: true = all ``runs`` as one group; false = groups of one; N = groups of at most N."""
    size = len(runs) if fuse_runs is True else max(int(fuse_runs), 1)
    return [runs[start : start + size] for start in range(0, len(runs), size)]


def _remove_ckpt_dir(ckpt_dir: Path) -> None:
    """Remove the finished job's checkpoint dir, except the checkpoints set aside as unusable (named in a line)."""
    kept = sorted(path.name for path in ckpt_dir.iterdir() if ".unusable" in path.name)
    for path in sorted(ckpt_dir.iterdir(), key=lambda path: (path.name == "job.json", path.name)):  # identity last
        if path.name not in kept:
            remove(path)
    if kept:
        log(f"kept what was set aside in {ckpt_dir}: {', '.join(kept)}")
    else:
        remove(ckpt_dir)


def _plan(job: Job) -> tuple[list, list[tuple]]:
    """The job's settings, and its runs in order: (setting, lr, weight decay, seed) per setting × lr × wd × seed."""
    scale_cfg = job.config["scales"][job.scale]
    optim, seeds = scale_cfg["optim"], [int(s) for s in job.config["seeds"]]
    settings = task_settings(job.task, scale_cfg["grid"], scale_cfg["task_overrides"].get(job.task, {}))
    return settings, [(s, float(lr), float(wd), seed) for s in settings for lr in optim["lrs"]
                      for wd in optim["weight_decays"] for seed in seeds]  # fmt: skip


def _start(job: Job, variant, plan: list[tuple], progress: Progress) -> tuple[list[dict], set[tuple], dict]:
    """Open the checkpoint dir: the rows an earlier attempt finished and their run keys; the rows' provenance; the
    job's first line."""
    scale_cfg, seeds = job.config["scales"][job.scale], [int(s) for s in job.config["seeds"]]
    code = {"variant_source_sha256": file_sha256(variant.source),
            "shared_code_sha256": job.shared_code_sha256}
    identity = {
        "variant": job.variant, **code, "task": job.task, "scale": job.scale, "scale_config": scale_cfg,
        "seeds": seeds, "kernels": job.config["kernels"],
        # a checkpoint dir of older code (other row schema or checkpoint format) is started afresh, not misread
        "run_schema": SCHEMA_VERSION, "checkpoint_format": CHECKPOINT_FORMAT,
    }  # fmt: skip
    remove_leftover_temps(job.out)
    done = _prepare_ckpt_dir(job.ckpt_dir, identity)
    rows = [] if done is None else done.to_dict("records")
    finished = {run_key(r["setting_id"], r["lr"], r["weight_decay"], r["seed"]) for r in rows}
    commit, dirty = git_state()
    provenance = {"device": device_name(job.device), **versions(), **environment_files(), "git_commit": commit,
                  "git_dirty": dirty, **code}  # fmt: skip
    threads = f", {torch.get_num_threads()} threads" if job.device.type == "cpu" else ""
    log(f"deltanet train: {job.variant} ({variant.mixer}) × {job.task}, scale {job.scale}: {len(plan)} runs "
        f"({len(finished)} already finished) on {provenance['device']}{threads}")  # fmt: skip
    progress.left = sum(scale_cfg["optim"]["max_epochs"] for s, lr, wd, seed in plan
                        if run_key(s.id, lr, wd, seed) not in finished)  # fmt: skip
    return rows, finished, provenance


def _checkpoint_path(job: Job, runs: list[RunPlan]) -> Path:
    return job.ckpt_dir / f"runs-{runs[0].index:04d}-{runs[-1].index:04d}.pt"


def _split_earlier(job: Job, runs: list[RunPlan]) -> bool:
    """Whether an earlier attempt split these runs (a checkpoint of a part of them, none of them all)."""
    first, last = runs[0].index, runs[-1].index
    spans = [tuple(map(int, m.groups())) for path in job.ckpt_dir.glob("runs-*-*.pt")
             if (m := re.fullmatch(r"runs-(\d+)-(\d+)\.pt", path.name))]  # fmt: skip
    return any(first <= a <= b <= last and (a, b) != (first, last) for a, b in spans)


def _train_fitting(group: GroupPlan, data: TensorData, job: Job, on_epoch, hooks: JobHooks, progress: Progress,
                   done: Callable[[GroupPlan, list[dict]], None]) -> None:  # fmt: skip
    """Train ``group`` and hand its results to ``done`` (which keeps them) before its checkpoint goes. A group that
    does not fit the GPU is split in two halves trained one after the other, each resuming from its share of the
    group's checkpoint (a group of one that does not fit raises); a rerun resumes the halves."""
    ckpt, n = _checkpoint_path(job, group.runs), len(group.runs)
    halves = [group.runs[: n // 2], group.runs[n // 2 :]]
    if n > 1 and not ckpt.exists() and _split_earlier(job, group.runs):
        log(f"runs {group.span}: split into {n // 2} + {n - n // 2} by an earlier attempt; resuming the parts")
    else:
        progress.group, progress.ckpt, progress.epochs = f"run{'s' if n > 1 else ''} {group.span}", ckpt, None
        settings = ", ".join(f"lr={r.lr:g} wd={r.weight_decay:g} seed={r.seed}" for r in group.runs)
        log(f"{progress.group}/{group.total} {job.task}/{group.label}{f', {n} fused' if n > 1 else ''}: {settings}"
            f"{' (resuming a checkpoint)' if ckpt.exists() else ''}")
        try:
            results = train_group(group, data, ckpt, on_epoch, hooks.loss, log)
        except torch.cuda.OutOfMemoryError as err:
            if n == 1:
                raise
            cause = str(err).splitlines()[0] if str(err) else "out of memory"
            results = None
        if results is not None:
            done(group, results)
            progress.group, progress.ckpt = "", None  # finished: a rerun skips these runs
            remove(ckpt)
            return
        # outside the except block, so the failed attempt's tensors can be freed
        resume = "each half starts over (no checkpoint yet)"
        if ckpt.exists():
            split_checkpoint(ckpt, [([r.index for r in runs], _checkpoint_path(job, runs)) for runs in halves])
            resume = f"each half resumes from its share of {ckpt.name}"
        log(f"runs {group.span}: a fused group of {n} does not fit on {device_name(job.device)} ({cause}); "
            f"splitting it into {n // 2} + {n - n // 2}; {resume}")
        if job.device.type == "cuda":
            torch.cuda.empty_cache()
    for runs in halves:
        _train_fitting(dataclasses.replace(group, runs=runs), data, job, on_epoch, hooks, progress, done)


def _row(job: Job, mixer: str, setting, run: RunPlan, result: dict, provenance: dict) -> dict:
    scale_cfg, fields = job.config["scales"][job.scale], dict(setting.fields)
    row = {
        "schema_version": SCHEMA_VERSION, "variant": job.variant, "mixer": mixer, "task": job.task,
        "scale": job.scale, "setting_id": str(setting.id), "setting_json": json.dumps(fields, sort_keys=True),
        "lr": run.lr, "weight_decay": run.weight_decay, "seed": run.seed, **result, **provenance,
        "profile": scale_cfg.get("profile", ""),
        "config_sha256": config_hash({"scale": scale_cfg, "task": job.task, "setting": fields,
                                      "kernels": job.config["kernels"]}),
    }  # fmt: skip
    clash = sorted(set(fields) & set(row))
    if clash:
        raise ValueError(f"setting fields {clash} clash with run-table columns")
    return {**{c: row[c] for c in RUN_COLUMNS}, **fields}


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for column, kind in RUN_COLUMNS.items():  # pin dtypes so an all-NaN or one-row file keeps the schema
        df[column] = df[column].astype({"i": "int64", "f": "float64", "b": "bool", "O": "object"}[kind])
    return df
