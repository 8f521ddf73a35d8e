"""The smoke check: every setting of a scale at its real shapes, one short run each — a preflight for the full scale.

The ``smoke`` scale of ``config.yaml`` keeps the full scale's grid (the 66 MAD settings), model and optimiser, and
trains one epoch of ``optim.max_steps_per_epoch`` batches with evaluations capped at ``optim.max_eval_batches``.
It runs both baselines on every setting of every task, and every other variant on the largest setting of each task
(longest sequence, then largest vocabulary), each as the setting's whole fused group (every lr × weight decay, the
first seed: the members a job trains together), through the training loop a job uses (autocast, captured steps,
evaluation, checkpoint, best-epoch restore). 5 steps reach a replayed CUDA graph (3 warm-up calls, the recording,
a replay: ``deltanet/training/capture.py``), so the memory of the graph pools counts. Each (model, setting) gets
one row: finite or not, members, whether steps were replayed, peak memory allocated and reserved (the caching
allocator's, graph pools included: what decides an out-of-memory), seconds. A run that raises (e.g. out of
memory) is recorded and the rest go on. The command is ``deltanet smoke``
(:mod:`deltanet.cli.smoke`).
"""

from __future__ import annotations

import math
import tempfile
import time
from itertools import product
from pathlib import Path

from deltanet.variants.catalog import BASELINE_VARIANTS

BASELINES = tuple(BASELINE_VARIANTS.values())  # run on every setting; the other variants on the largest


def largest(settings: list) -> object:
    """The setting with the longest sequence, ties broken by the largest vocabulary (the most memory per row)."""
    return max(settings, key=lambda s: (s.fields["seq_len"], s.fields["vocab_size"]))


def plan_runs(scale_cfg: dict, variants: list[str], tasks: list[str]) -> list[tuple[str, str, object]]:
    """(variant, task, setting) for every run of the smoke check, grouped by setting so that each dataset is built
    once: per task, the baselines on every setting, the largest setting last, where the other variants follow."""
    from deltanet.tasks import task_settings

    runs = []
    for task in tasks:
        settings = task_settings(task, scale_cfg["grid"], scale_cfg["task_overrides"].get(task, {}))
        big = largest(settings)
        for setting in [s for s in settings if s is not big] + [big]:
            runs += [(v, task, setting) for v in variants if v in BASELINES]
        runs += [(v, task, big) for v in variants if v not in BASELINES]
    return runs


def smoke(config: dict, scale: str, device, variants: list[str], tasks: list[str], cache_dir: Path | None = None,
          log=print) -> list[dict]:  # fmt: skip
    """Run the smoke check; one result row per (variant, task, setting)."""
    import numpy as np
    import torch

    from deltanet.tasks import get_task, make_datasets
    from deltanet.training.loop import GroupPlan, RunPlan, TensorData, train_group
    from deltanet.training.provenance import peak_reserved_mb

    scale_cfg = config["scales"][scale]
    optim = scale_cfg["optim"]
    model_kwargs = {**scale_cfg["model"], "kernels": config["kernels"]}
    runs = plan_runs(scale_cfg, variants, tasks)
    rows, data_cache = [], {}
    with tempfile.TemporaryDirectory(prefix="deltanet-smoke-") as tmp:
        for index, (variant, task, setting) in enumerate(runs, start=1):
            key = (task, setting.id)
            if key not in data_cache:
                data_cache.clear()  # one setting's tensors at a time
                data_cache[key] = TensorData.from_datasets(make_datasets(setting, cache_dir=cache_dir), device)
            members = [RunPlan(index * 100 + k, float(lr), float(wd), int(config["seeds"][0]))
                       for k, (lr, wd) in enumerate(product(optim["lrs"], optim["weight_decays"]))]  # fmt: skip
            plan = GroupPlan(
                runs=members, total=len(runs), label=setting.id, vocab_size=int(setting.fields["vocab_size"]),
                model_kwargs={**model_kwargs, "variant": variant}, autoencoder=get_task(task).autoencoder,
                optim=optim, device=device,
            )  # fmt: skip
            started = time.perf_counter()
            row = {"variant": variant, "task": task, "setting_id": str(setting.id),
                   "seq_len": int(setting.fields["seq_len"]), "vocab_size": plan.vocab_size}  # fmt: skip
            try:
                results = train_group(plan, data_cache[key], Path(tmp) / f"run-{index}.pt", lambda *_: None)
                losses = [r[k] for r in results for k in ("test_loss", "train_loss")]
                row.update(ok=all(math.isfinite(x) for x in losses), error="", members=len(members),
                           replayed=results[0]["captured"], peak_memory_mb=results[0]["peak_memory_mb"],
                           reserved_memory_mb=peak_reserved_mb(device), test_loss=max(losses[::2]))  # fmt: skip
            except Exception as err:  # recorded per run (an OOM on one setting must not hide the others)
                row.update(ok=False, error=f"{type(err).__name__}: {' '.join(str(err).split())[:300]}",
                           members=len(members), replayed=False, peak_memory_mb=np.nan, reserved_memory_mb=np.nan,
                           test_loss=np.nan)  # fmt: skip
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            row["seconds"] = time.perf_counter() - started
            rows.append(row)
            status = "ok" if row["ok"] else f"FAILED {row['error'] or 'non-finite loss'}"
            log(f"[{index}/{len(runs)}] {variant} × {task}/{setting.id}, {len(members)} fused: {status}, peak "
                f"{row['peak_memory_mb']:.0f} MB allocated, {row['reserved_memory_mb']:.0f} MB reserved, "
                f"{row['seconds']:.1f} s")  # fmt: skip
    return rows


def summary_markdown(df, scale: str, device: str) -> str:
    """Peak memory (allocated, reserved) and seconds per setting (worst over models), then every failure."""
    worst = (df.groupby(["task", "setting_id"], sort=False)
             .agg(models=("variant", "nunique"), members=("members", "max"), ok=("ok", "all"),
                  replayed=("replayed", "all"), peak_memory_mb=("peak_memory_mb", "max"),
                  reserved_memory_mb=("reserved_memory_mb", "max"), seconds=("seconds", "max")).reset_index())
    failed = df[~df["ok"]]
    lines = [f"# Smoke check: scale `{scale}` on {device}", "",
             f"{int(df['ok'].sum())}/{len(df)} runs finite; {worst['ok'].sum()}/{len(worst)} settings all ok.", "",
             worst.to_markdown(index=False, floatfmt=".1f"), ""]  # fmt: skip
    if len(failed):
        lines += ["## Failed runs", ""] + [f"- {r.variant} × {r.task}/{r.setting_id}: {r.error or 'non-finite loss'}"
                                           for r in failed.itertuples()]  # fmt: skip
    return "\n".join(lines) + "\n"
