"""Seconds per epoch of one full-scale job's group per task, extrapolated to the whole protocol in GPU-hours.

    PYTHONPATH=. python benchmarks/protocol_cost.py [--config config.yaml] [--scale full] [--epochs 3]
        [--device auto|cpu|cuda] [--steps-per-epoch N] [--throughput throughput.json] [--json PATH]

Per task: the baseline model on the task's baseline setting of the scale, trained ``--epochs`` epochs through the
job's engine (``deltanet/training/loop.py``: the setting's runs as one fused group, as ``optim.fuse_runs`` and
``optim.capture`` say; its precision, batch size, evaluation each epoch); the first epoch (compilation, warm-up,
capture) is dropped when there are more, and so is what ``finish()`` took (the stopping epoch's evaluation of
the best models on the training set), which is counted once per group instead. ``--steps-per-epoch N`` (a quick look on a CPU) trains and evaluates N
batches per epoch and scales the time up to the full epoch's batches. Extrapolation, an upper bound (early stopping
ignored):

    GPU-hours = Σ_models Σ_settings  groups_per_setting · (max_epochs · t_epoch(task) + t_finish(task))
                                     · tokens(setting) / tokens(baseline) / ratio(model) / 3600

with tokens = (train + test examples) · seq_len, groups_per_setting = 1 fused (|lrs| · |weight decays| · |seeds|
with ``fuse_runs: false``), t_epoch the group's epoch, and ratio(model) the model's run-token throughput relative to
``delta_net_4layer`` in the jobs' engine (``benchmarks/train_throughput.py --json``; without it every model is
assumed to cost the baseline's, and the result says so; a model whose ratio is missing or NaN leaves the total
unknown, never filled in). Each task's figure and the total are printed as rows (``rows.emit``) as soon as they are
known.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402
from rows import emit, expect  # noqa: E402  (benchmarks/ is this script's folder)

from deltanet.config import load_config  # noqa: E402
from deltanet.tasks import TASK_IDS, get_task, make_datasets, task_settings  # noqa: E402
from deltanet.training.device import DEVICE_CHOICES, training_device  # noqa: E402
from deltanet.training.loop import GroupPlan, RunPlan, TensorData, train_group  # noqa: E402
from deltanet.variants import variant_names  # noqa: E402
from deltanet.variants.catalog import BASELINE_VARIANTS  # noqa: E402

BASELINE = BASELINE_VARIANTS["delta"]


def tokens(setting) -> int:
    f = setting.fields
    return (f["num_train_examples"] + f["num_test_examples"]) * f["seq_len"]


def epoch_seconds(config: dict, scale: str, task: str, epochs: int, device: torch.device,
                  steps: int | None = None) -> tuple[float, float]:  # fmt: skip
    """(seconds of a steady epoch, seconds of ``finish()``) of the baseline's group on the task's baseline setting.

    A steady epoch: training + evaluation, the mean over epochs after the first (compilation, warm-up, capture)
    less what ``finish()`` took in them; ``finish()`` (``deltanet/training/loop.py``: the stopping runs' best
    models evaluated on the training set) runs once per group, at its stopping epoch, here the last."""
    from deltanet.training import loop

    finishes: list[tuple[int, float]] = []  # (epoch stamp it fell in, seconds)
    real_finish = loop.finish

    def timed_finish(*args) -> None:
        started = time.perf_counter()
        real_finish(*args)
        finishes.append((len(stamps), time.perf_counter() - started))

    scale_cfg = config["scales"][scale]
    setting = task_settings(task, "baseline", scale_cfg["task_overrides"].get(task, {}))[0]
    optim = scale_cfg["optim"]
    batches = {"train": optim["batch_size"], "test": optim.get("eval_batch_size", optim["batch_size"])}
    full_batches = sum(-(-setting.fields[f"num_{part}_examples"] // batch) for part, batch in batches.items())
    train_batches = -(-setting.fields["num_train_examples"] // batches["test"])  # finish() evaluates the train set
    caps = {} if steps is None else {"max_steps_per_epoch": steps, "max_eval_batches": steps}
    data = TensorData.from_datasets(make_datasets(setting), device)
    stamps = [time.perf_counter()]
    runs = [RunPlan(i, float(lr), float(wd), int(seed)) for i, (lr, wd, seed) in enumerate(
        ((lr, wd, seed) for lr in optim["lrs"] for wd in optim["weight_decays"] for seed in config["seeds"]), 1)]
    plan = GroupPlan(
        runs=runs if optim.get("fuse_runs", True) else runs[:1], total=len(runs), label=setting.id,
        vocab_size=int(setting.fields["vocab_size"]), autoencoder=get_task(task).autoencoder,
        model_kwargs={**scale_cfg["model"], "variant": BASELINE, "kernels": config["kernels"]},
        optim={**optim, "max_epochs": epochs, "stop_accuracy": 1.1, **caps}, device=device,
    )  # fmt: skip
    loop.finish = timed_finish
    try:
        with tempfile.TemporaryDirectory() as tmp:
            train_group(plan, data, Path(tmp) / "group.pt", lambda group, run, *_: run.index == runs[0].index and
                        stamps.append(time.perf_counter()))  # fmt: skip
    finally:
        loop.finish = real_finish
    finish_in = [sum(s for epoch, s in finishes if epoch == i) for i in range(1, len(stamps))]
    durations = [b - a - f for a, b, f in zip(stamps, stamps[1:], finish_in)]
    steady = durations[1:] or durations
    seconds, finish_seconds = sum(steady) / len(steady), finish_in[-1]
    if steps is None:
        return seconds, finish_seconds
    return seconds * full_batches / (2 * steps), finish_seconds * train_batches / steps


def protocol_gpu_hours(config: dict, scale: str, per_task: dict[str, float], ratios: dict[str, float] | None,
                       finish: dict[str, float] | None = None) -> dict:
    """The extrapolation above. ``ratios`` None: every model assumed to cost the baseline's (said in the result);
    a model whose ratio is missing or NaN is listed in ``missing_ratios`` and the total is NaN, never filled in."""
    scale_cfg = config["scales"][scale]
    optim = scale_cfg["optim"]
    runs_per_setting = len(optim["lrs"]) * len(optim["weight_decays"]) * len(config["seeds"])
    groups_per_setting = 1 if optim.get("fuse_runs", True) else runs_per_setting
    per_model_seconds = 0.0  # the baseline model over every setting
    n_runs = 0
    for task, t_epoch in per_task.items():
        overrides = scale_cfg["task_overrides"].get(task, {})
        base = tokens(task_settings(task, "baseline", overrides)[0])
        for setting in task_settings(task, scale_cfg["grid"], overrides):
            epochs = optim["max_epochs"] * t_epoch + (finish or {}).get(task, 0.0)
            per_model_seconds += groups_per_setting * epochs * tokens(setting) / base
            n_runs += runs_per_setting
    models = variant_names()
    missing = [] if ratios is None else [m for m in models if not 0 < ratios.get(m, math.nan) < math.inf]
    known = {m: 1.0 if ratios is None else ratios[m] for m in models if m not in missing}
    hours = sum(per_model_seconds / ratio for ratio in known.values()) / 3600 if not missing else math.nan
    return {"models": len(models), "runs_per_model": n_runs, "gpu_hours_upper_bound": hours,
            "baseline_model_hours": per_model_seconds / 3600, "ratios": "assumed 1" if ratios is None else "measured",
            "missing_ratios": missing}  # fmt: skip


def replayed_ratios(figures: dict) -> dict[str, float]:
    """Each model's ratio from ``train_throughput.py --json``, NaN where it is not of the jobs' engine: a captured
    figure whose steps (or the baseline's) were not replayed from a graph measured eager steps."""
    base = figures.get(BASELINE, {})

    def real(row: dict) -> bool:
        return row.get("job_engine") != "captured" or bool(row.get("replayed"))
    return {m: v["ratio"] if real(v) and real(base) else math.nan for m, v in figures.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=os.path.join(REPO, "config.yaml"))
    p.add_argument("--scale", default="full")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--tasks", help="comma-separated subset (default: every task)")
    p.add_argument("--steps-per-epoch", type=int, help="time this many batches per epoch and scale up")
    p.add_argument("--throughput", help="JSON of benchmarks/train_throughput.py --json (per-model ratios)")
    p.add_argument("--json", help="also write the figures as JSON to this path")
    args = p.parse_args(argv)
    config = load_config(args.config)
    device = training_device(args.device)
    ratios = None
    if args.throughput:
        ratios = replayed_ratios(json.loads(Path(args.throughput).read_text()))
    per_task, finish = {}, {}
    tasks = args.tasks.split(",") if args.tasks else TASK_IDS
    expect("task", [*tasks, "protocol"])
    for task in tasks:
        started = time.perf_counter()
        per_task[task], finish[task] = epoch_seconds(config, args.scale, task, args.epochs, device,
                                                     args.steps_per_epoch)  # fmt: skip
        emit(task=task, seconds_per_group_epoch=per_task[task], finish_seconds=finish[task],
             measure_s=time.perf_counter() - started)  # fmt: skip
    total = protocol_gpu_hours(config, args.scale, per_task, ratios, finish)
    emit(task="protocol", **total)
    print(f"| task | s/epoch of a group (baseline setting, {BASELINE}) |\n|---|---:|")
    for task, seconds in per_task.items():
        print(f"| {task} | {seconds:.2f} |")
    cost = (f"{total['gpu_hours_upper_bound']:.1f} GPU-hours (upper bound; model ratios {total['ratios']})"
            if not total["missing_ratios"] else f"not known: {len(total['missing_ratios'])} models have no throughput "
            f"ratio ({', '.join(total['missing_ratios'][:3])}{', …' if len(total['missing_ratios']) > 3 else ''})")
    print(f"\nWhole protocol, scale {args.scale} ({total['models']} models × {total['runs_per_model']} runs, "
          f"every run to max_epochs): {cost}")
    if args.json:
        Path(args.json).write_text(json.dumps({"seconds_per_epoch": per_task, "finish_seconds": finish, **total},
                                              indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
