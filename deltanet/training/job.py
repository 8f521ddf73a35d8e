"""One variant × task job: every run of the scale, resumable, written to one parquet file.

Runs, in order: each setting of ``task_settings(task, scale.grid, scale.task_overrides[task])`` × each lr × each
weight decay × each seed of ``config["seeds"]``.

Checkpoint directory (default ``<out>.ckpt/``) while the job is unfinished:

- ``job.json``: the job's identity (variant, its source hash, task, scale config, seeds, kernels). A directory left
  by a *different* job (edited config or variant) is wiped instead of resumed.
- ``finished.parquet``: the rows of the finished runs, rewritten atomically after each run.
- ``run-NNNN.pt``: the unfinished run's checkpoint, rewritten atomically after each epoch.

A re-invoked job skips finished runs and resumes the unfinished one. ``out`` is written (atomically) only when
every run is done; then the checkpoint directory is removed.
"""

from __future__ import annotations

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
from deltanet.training.loop import LossHook, RunPlan, RunState, TensorData, train_run
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

    def on_epoch(p: RunPlan, st: RunState, m: dict) -> None:
        progress.epoch()
        log(f"  run {p.index}/{p.total} epoch {st.epoch}/{optim['max_epochs']}  loss {m['train_loss']:.4f}  "
            f"test acc {m['acc']:.4f} ppl {m['ppl']:.4g}  {m['steps_per_second']:.1f} it/s  ETA {progress.eta()}")
        if hooks.after_epoch is not None:
            hooks.after_epoch(progress.done)

    data_for: tuple[str, TensorData, float] | None = None
    for index, (setting, lr, wd, seed) in enumerate(plan, start=1):
        if run_key(setting.id, lr, wd, seed) in finished:
            log(f"run {index}/{len(plan)} {setting.id} lr={lr:g} wd={wd:g} seed={seed}: finished earlier, skipped")
            continue
        if data_for is None or data_for[0] != setting.id:
            ds = make_datasets(setting, cache_dir=job.cache_dir)
            data_for = (setting.id, TensorData.from_datasets(ds, job.device), chance_level(np.asarray(ds.test_targets)))
        _, data, chance = data_for
        ckpt = job.ckpt_dir / f"run-{index:04d}.pt"
        resume = " (resuming a checkpoint)" if ckpt.exists() else ""
        log(f"run {index}/{len(plan)} {job.task}/{setting.id} lr={lr:g} wd={wd:g} seed={seed}{resume}")
        run_plan = RunPlan(
            index=index, total=len(plan), label=setting.id, vocab_size=int(setting.fields["vocab_size"]),
            lr=lr, weight_decay=wd, seed=seed, model_kwargs=model_kwargs, autoencoder=task.autoencoder,
            optim=optim, device=job.device,
        )  # fmt: skip
        result = train_run(run_plan, data, ckpt, on_epoch, hooks.loss)
        progress.run_ended(optim["max_epochs"] - result["epochs_run"])
        log(f"run {index}/{len(plan)} done: {result['stop_reason']}, best epoch {result['best_epoch']}/"
            f"{result['epochs_run']}, test acc {result['test_acc']:.4f} (chance {chance:.4f}) "
            f"ppl {result['test_ppl']:.4g}, {result['wall_seconds']:.1f} s")
        rows.append(_row(job, variant.mixer, setting, lr, wd, seed, scale_cfg, result, provenance, config))
        _write_parquet(_frame(rows), job.ckpt_dir / FINISHED)
        ckpt.unlink(missing_ok=True)

    df = _frame(rows)
    validate_runs(df, str(job.out))
    _write_parquet(df, job.out)
    shutil.rmtree(job.ckpt_dir, ignore_errors=True)
    log(f"wrote {len(df)} runs to {job.out}")


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
