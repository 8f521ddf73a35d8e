"""One variant × task job: every run of the scale, resumable, written to one parquet file.

Runs, in order: each setting of ``task_settings(task, scale.grid, scale.task_overrides[task])`` × each lr × each
weight decay × each seed of ``config["seeds"]``. With ``optim.fuse_runs`` (the default) the unfinished runs of a
setting train together as one fused group (``deltanet/training/loop.py``); off, each run is a group of one. A group
that does not fit the GPU is split in two (one line says so) and each half trains on its own.

Checkpoint directory (default ``<out>.ckpt/``) while the job is unfinished:

- ``job.json``: the job's identity (variant, its source hash, task, scale config, seeds, kernels). A directory left
  by a *different* job (edited config or variant) is wiped instead of resumed.
- ``finished.parquet``: the rows of the finished runs, rewritten atomically after each run.
- ``runs-FFFF-LLLL.pt``: the unfinished group's checkpoint (its runs FFFF…LLLL), rewritten atomically after each
  epoch.

A re-invoked job skips finished runs and resumes the unfinished group. ``out`` is written (atomically) only when
every run is done; then the checkpoint directory is removed.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from deltanet.hashing import config_hash
from deltanet.io import atomic_path, write_text_atomic
from deltanet.runs import RUN_COLUMNS, SCHEMA_VERSION, validate_runs
from deltanet.tasks import get_task, make_datasets, task_settings
from deltanet.training.loop import CHECKPOINT_FORMAT, GroupPlan, LossHook, RunPlan, RunState, TensorData, train_group
from deltanet.training.provenance import device_name, environment_files, file_sha256, git_state, versions
from deltanet.variants import get_variant

FINISHED = "finished.parquet"


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
    cache_dir: Path | None = None


def log(msg: str) -> None:
    print(msg, flush=True)


def chance_level(test_targets: np.ndarray) -> float:
    """Macro accuracy of a uniform random guess over the classes scored in the test set: 1 / #classes."""
    classes = np.unique(test_targets[test_targets != -100])
    return 1.0 / len(classes) if len(classes) else float("nan")


def run_key(setting_id: str, lr: float, wd: float, seed: int) -> tuple:
    return (str(setting_id), float(lr), float(wd), int(seed))


class Progress:
    """Epoch counter for the ETA (an upper bound: every remaining run is assumed to use all its epochs)."""

    def __init__(self, epochs_left: int):
        self.left, self.done, self.seconds, self.t0 = epochs_left, 0, 0.0, time.perf_counter()

    def epoch(self) -> None:
        self.left, self.done = self.left - 1, self.done + 1

    def run_ended(self, unused_epochs: int) -> None:
        self.left -= unused_epochs

    def eta(self) -> str:
        if not self.done:
            return "?"
        per_epoch = (time.perf_counter() - self.t0) / self.done
        return str(timedelta(seconds=round(per_epoch * max(self.left, 0))))


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
            log(f"checkpoint dir {ckpt_dir} belongs to a different job configuration: starting afresh")
            shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if not marker.exists():
        write_text_atomic(marker, json.dumps({"job_sha256": wanted, **identity}, indent=1, default=str))
    finished = ckpt_dir / FINISHED
    if finished.exists():
        df = pd.read_parquet(finished)
        validate_runs(df, str(finished))
        return df
    return None


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def run_job(job: Job, hooks: JobHooks | None = None) -> None:
    hooks = hooks or JobHooks()
    config, scale_cfg = job.config, job.config["scales"][job.scale]
    optim, seeds = scale_cfg["optim"], [int(s) for s in config["seeds"]]
    variant, task = get_variant(job.variant), get_task(job.task)
    settings = task_settings(job.task, scale_cfg["grid"], scale_cfg["task_overrides"].get(job.task, {}))
    plan = [(s, float(lr), float(wd), seed)
            for s in settings for lr in optim["lrs"] for wd in optim["weight_decays"] for seed in seeds]  # fmt: skip
    model_kwargs = {**scale_cfg["model"], "variant": job.variant, "kernels": config["kernels"]}
    variant_sha = file_sha256(variant.source)
    identity = {
        "variant": job.variant, "variant_source_sha256": variant_sha, "task": job.task, "scale": job.scale,
        "scale_config": scale_cfg, "seeds": seeds, "kernels": config["kernels"],
        # a checkpoint dir of older code (other row schema or checkpoint format) is started afresh, not misread
        "run_schema": SCHEMA_VERSION, "checkpoint_format": CHECKPOINT_FORMAT,
    }  # fmt: skip
    done = _prepare_ckpt_dir(job.ckpt_dir, identity)
    rows = [] if done is None else done.to_dict("records")
    finished = {run_key(r["setting_id"], r["lr"], r["weight_decay"], r["seed"]) for r in rows}

    commit, dirty = git_state()
    provenance = {"device": device_name(job.device), **versions(), **environment_files(), "git_commit": commit,
                  "git_dirty": dirty, "variant_source_sha256": variant_sha}  # fmt: skip
    threads = f", {torch.get_num_threads()} threads" if job.device.type == "cpu" else ""
    log(f"deltanet train: {job.variant} ({variant.mixer}) × {job.task}, scale {job.scale}: {len(plan)} runs "
        f"({len(finished)} already finished) on {provenance['device']}{threads}")  # fmt: skip
    progress = Progress(sum(optim["max_epochs"] for s, lr, wd, seed in plan
                            if run_key(s.id, lr, wd, seed) not in finished))  # fmt: skip

    def on_epoch(group: GroupPlan, run: RunPlan, st: RunState, m: dict) -> None:
        progress.epoch()
        log(f"  run {run.index}/{group.total} epoch {st.epoch}/{optim['max_epochs']}  loss {m['train_loss']:.4f}  "
            f"test acc {m['acc']:.4f} ppl {m['ppl']:.4g}  {m['steps_per_second']:.1f} it/s  ETA {progress.eta()}")
        if hooks.after_epoch is not None:
            hooks.after_epoch(progress.done)

    fuse = optim.get("fuse_runs", True)
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
        for runs in [todo] if fuse else [[r] for r in todo]:
            for group, results in _train_fitting(GroupPlan(runs, **shared), data, job, on_epoch, hooks):
                for run, result in zip(group.runs, results):
                    progress.run_ended(optim["max_epochs"] - result["epochs_run"])
                    log(f"run {run.index}/{len(plan)} done: {result['stop_reason']}, best epoch "
                        f"{result['best_epoch']}/{result['epochs_run']}, test acc {result['test_acc']:.4f} (chance "
                        f"{chance:.4f}) ppl {result['test_ppl']:.4g}, {result['wall_seconds']:.1f} s")
                    rows.append(_row(job, variant.mixer, setting, run.lr, run.weight_decay, run.seed, scale_cfg,
                                     result, provenance, config))  # fmt: skip
                _write_parquet(_frame(rows), job.ckpt_dir / FINISHED)

    df = _frame(rows)
    validate_runs(df, str(job.out))
    _write_parquet(df, job.out)
    shutil.rmtree(job.ckpt_dir, ignore_errors=True)
    log(f"wrote {len(df)} runs to {job.out}")


def _train_fitting(group: GroupPlan, data: TensorData, job: Job, on_epoch, hooks: JobHooks):
    """Train ``group``, yielding (group, its results) once done; a group that does not fit the GPU is split in two
    halves trained one after the other (a group of one that does not fit raises)."""
    first, last, n = group.runs[0].index, group.runs[-1].index, len(group.runs)
    ckpt = job.ckpt_dir / f"runs-{first:04d}-{last:04d}.pt"
    settings = ", ".join(f"lr={r.lr:g} wd={r.weight_decay:g} seed={r.seed}" for r in group.runs)
    which = f"runs {first}-{last}" if n > 1 else f"run {first}"
    fused = f", {n} fused" if n > 1 else ""
    log(f"{which}/{group.total} {job.task}/{group.label}{fused}: {settings}"
        f"{' (resuming a checkpoint)' if ckpt.exists() else ''}")
    try:
        results = train_group(group, data, ckpt, on_epoch, hooks.loss, log)
    except torch.cuda.OutOfMemoryError as err:
        if n == 1:
            raise
        cause = str(err).splitlines()[0] if str(err) else "out of memory"
        results = None
    if results is None:  # outside the except block, so the failed attempt's tensors can be freed
        half = n // 2
        log(f"runs {first}-{last}: a fused group of {n} does not fit on {device_name(job.device)} ({cause}); "
            f"splitting it into {half} + {n - half}")
        ckpt.unlink(missing_ok=True)
        if job.device.type == "cuda":
            torch.cuda.empty_cache()
        for runs in (group.runs[:half], group.runs[half:]):
            yield from _train_fitting(dataclasses.replace(group, runs=runs), data, job, on_epoch, hooks)
        return
    ckpt.unlink(missing_ok=True)
    yield group, results


def _row(job, mixer, setting, lr, wd, seed, scale_cfg, result, provenance, config) -> dict:
    fields = dict(setting.fields)
    row = {
        "schema_version": SCHEMA_VERSION, "variant": job.variant, "mixer": mixer, "task": job.task,
        "scale": job.scale, "setting_id": str(setting.id), "setting_json": json.dumps(fields, sort_keys=True),
        "lr": lr, "weight_decay": wd, "seed": seed, **result, **provenance,
        "profile": scale_cfg.get("profile", ""),
        "config_sha256": config_hash({"scale": scale_cfg, "task": job.task, "setting": fields,
                                      "kernels": config["kernels"]}),
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
