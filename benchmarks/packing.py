"""Packing headroom: aggregate training throughput of N concurrent training jobs on one device (``jobs_per_gpu``).

    PYTHONPATH=. python benchmarks/packing.py [--procs 1 4 8] [--seconds 20] [--config config.yaml] [--scale full]
        [--task context_recall] [--device auto|cpu|cuda] [--json PATH]

Each process trains what a job trains: the baseline's fused group of the scale's runs (|lrs| · |weight decays| ·
|seeds|), captured on CUDA, through the engine (``train_throughput.job_group``), on random batches at the task's
baseline setting (its batch size, sequence length, vocabulary and precision); it warms up, then counts steps in
the same ``--seconds`` window as the others. Aggregate steps/s for N processes ÷ steps/s for 1 = how much packing
N jobs onto one GPU (``jobs_per_gpu: N``) gains.
Each process count's row is printed as soon as it is measured (``rows.emit``: ``procs``, ``steps_per_second``,
``gain``, ``late_workers`` = processes still warming up when the window opened, so counting fewer steps), then a
markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from rows import emit, expect  # noqa: E402  (benchmarks/ is this script's folder)

from deltanet.training.device import DEVICE_CHOICES  # noqa: E402  (torch is imported where a device is chosen)


def worker(args) -> None:
    """Train steps until ``start_at + seconds``; print the steps done inside the window and 1 if it started late."""
    import torch
    from deltanet.config import load_config
    from deltanet.tasks import task_settings
    from deltanet.training.device import training_device
    from train_throughput import BASELINE, job_group

    config = load_config(args.config) | {"scale": args.scale}
    scale = config["scales"][args.scale]
    fields = task_settings(args.task, "baseline", scale["task_overrides"].get(args.task, {}))[0].fields
    device = training_device(args.device)
    members = len(scale["optim"]["lrs"]) * len(scale["optim"]["weight_decays"]) * len(config["seeds"])
    # a job's group, as a job trains it: its runs fused, its steps captured on CUDA
    _, one_step = job_group(config, BASELINE, members, int(fields["seq_len"]), int(fields["vocab_size"]), device,
                            capture=device.type == "cuda")  # fmt: skip

    def step():
        one_step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up (compilation)
    late = time.time() > args.start_at
    while time.time() < args.start_at:
        step()
    steps = 0
    while time.time() < args.start_at + args.seconds:
        step()
        steps += 1
    print(steps, int(late))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--procs", nargs="+", type=int, default=[1, 4, 8])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=20.0, help="seconds allowed for start-up before the window")
    p.add_argument("--config", default=os.path.join(REPO, "config.yaml"))
    p.add_argument("--scale", default="full")
    p.add_argument("--task", default="context_recall")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--json", help="also write the figures as JSON to this path")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    rows = []
    expect("procs", args.procs)
    for n in args.procs:
        start_at = time.time() + args.warmup
        cmd = [sys.executable, __file__, "--worker", "--start-at", str(start_at), "--seconds", str(args.seconds),
               "--config", args.config, "--scale", args.scale, "--task", args.task,
               "--device", args.device]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(n)]
        outputs = [proc.communicate()[0].split() for proc in procs]
        if any(proc.returncode for proc in procs):
            raise RuntimeError(f"a worker failed with {n} processes")
        rate = sum(int(out[-2]) for out in outputs) / args.seconds
        one = rows[0]["steps_per_second"] if rows else rate
        rows.append({"procs": n, "steps_per_second": rate, "gain": rate / one if one else float("nan"),
                     "late_workers": sum(int(out[-1]) for out in outputs), "warmup_s": args.warmup,
                     "measure_s": args.seconds})  # fmt: skip
        emit(**rows[-1])
    print("| processes | aggregate steps/s | × one process | late workers |\n|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['procs']} | {row['steps_per_second']:.2f} | {row['gain']:.2f} | {row['late_workers']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
