"""The workflow itself on a GPU, started as its users start it, with one train job stopped mid-epoch and resumed.

    PYTHONPATH=. python benchmarks/workflow_e2e.py --out DIR [--cpu]

In a copy of the repository (results/ empty), ``config.yaml`` gains one scale, ``e2e``: the full scale's model and
optimiser (``--cpu``: a small model on small data, no GPU) on each task's baseline setting, 2 lrs × 2 weight
decays = one fused group of 4 per job, a few epochs of capped steps, the quick kernel grid. Models: the baseline
(kernel path), a loop variant, the reference Gated DeltaNet; task: context recall. Then:

1. ``snakemake --cores all`` (its GPU slots, 3 jobs per GPU, ``verify_kernels``, the three train jobs at once);
   once the baseline's job has written its first checkpoint, its ``deltanet train`` process gets SIGTERM (SLURM's
   time limit) and Snakemake reports the job failed;
2. ``snakemake --cores all`` again: the stopped job resumes (on CUDA with a GPU), everything finishes;
3. the same job uninterrupted (``deltanet train`` into ``DIR/uninterrupted.parquet``).

Rows (``rows.emit``): each step's outcome and seconds; the stopped job's last line; the GPU each job's log names;
per run row of every job its group size and whether its steps were captured; the resumed job's rows against the
uninterrupted ones (largest relative difference per metric; equal = within ``RTOL``). Exit 1 when a step failed,
a row is not a fused group of 4, the resumed rows differ, or (with a GPU) a job's steps were not captured.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from rows import emit, expect

REPO = Path(__file__).resolve().parents[1]
MODELS = ("delta_net_4layer", "delta_net_4layer_momentum_state_update_in_for_loop", "gated_delta_net_4layer")
TASK, STOPPED = "context_recall", "delta_net_4layer"
LRS, WEIGHT_DECAYS = [1e-3, 3e-4], [0.0, 0.1]
MEMBERS = len(LRS) * len(WEIGHT_DECAYS)  # one fused group per job
RTOL = 1e-4  # tests/test_fused.py's tolerance; CPU runs must be bitwise equal (rtol 0)
METRICS = ("test_acc", "test_ppl", "test_loss", "train_acc", "train_loss", "best_epoch", "epochs_run")


def e2e_scale(config: dict, cpu: bool) -> dict:
    """The ``e2e`` scale: a fused group of 4 per job, a few epochs of capped steps, the quick kernel grid; on a CPU
    a model and data small enough for seconds."""
    base = config["scales"]["full"]
    optim = {**base["optim"], "lrs": LRS, "weight_decays": WEIGHT_DECAYS, "max_epochs": 6,
             "max_steps_per_epoch": 8, "max_eval_batches": 2, "stop_accuracy": 1.0}  # fmt: skip
    scale = {**base, "grid": "baseline", "optim": optim, "verify_grid": "quick",
             "resources": {"gpu": 1, "mem_mb": 8000, "runtime_min": 30}}  # fmt: skip
    if cpu:
        scale.pop("profile", None)
        scale |= {"model": {"dim": 16, "num_heads": 2, "head_dim": 8, "chunk_size": 8},
                  "task_overrides": {TASK: {"seq_len": 32, "num_train_examples": 128, "num_test_examples": 32}},
                  "resources": {"gpu": 0, "mem_mb": 2000, "runtime_min": 10}}  # fmt: skip
        scale["optim"] = {**optim, "batch_size": 16, "eval_batch_size": 16, "max_epochs": 12, "max_steps_per_epoch": 4}
    return scale


def copy_repository(work: Path, cpu: bool) -> Path:
    """The repository's files without results, caches and virtual environments; its config with the e2e scale."""
    ignore = shutil.ignore_patterns(".git", ".venv", "results", "__pycache__", ".snakemake", "*.egg-info")
    shutil.copytree(REPO, work, ignore=ignore, dirs_exist_ok=True)
    config = yaml.safe_load((work / "config.yaml").read_text())
    config["scales"]["e2e"] = e2e_scale(config, cpu)
    # the three train jobs share the one GPU at once (3 slots): the check's window is short, and it packs through slots
    config.update(scale="e2e", variants=list(MODELS), tasks=[TASK], seeds=[12345], jobs_per_gpu=len(MODELS))
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return work


def environment(work: Path) -> dict:
    """This environment with the copy's package first on the path (the GPU check's wheels stay after it), and this
    interpreter as the ``python`` the rules' commands call (a bare image may have only ``python3``)."""
    bin_dir = work / ".bin"
    bin_dir.mkdir(exist_ok=True)
    python = bin_dir / "python"  # a script, not a link: a virtual environment's Python is found by its own path
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    path = os.pathsep.join(filter(None, [str(work), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def snakemake(work: Path, log: Path, stop_job_after_checkpoint: bool = False) -> dict:
    """One ``snakemake --cores all`` in ``work``; optionally SIGTERM the stopped model's train job once it has a
    checkpoint. Returns the step's row."""
    started, env = time.monotonic(), environment(work)
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "all"], cwd=work, env=env,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        stopped = stop_train_job(work, proc) if stop_job_after_checkpoint else None
        code = proc.wait()
    return {"exit": code, "seconds": round(time.monotonic() - started, 1), "stopped_pid": stopped}


def stop_train_job(work: Path, snakemake_proc: subprocess.Popen) -> int | None:
    """SIGTERM the stopped model's ``deltanet train`` process as soon as its group has a checkpoint."""
    ckpt_dir = work / f"results/e2e/runs/{STOPPED}/{TASK}.parquet.ckpt"
    # the train process itself (gpu-slot and the malloc re-exec replace theirs), not the job's shell
    pattern = f"^[^ ]*python[^ ]* -m deltanet train --variant {STOPPED} --task {TASK} "
    while snakemake_proc.poll() is None:
        if any(ckpt_dir.glob("runs-*.pt")):
            found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
            # this run's own job (its working folder): another run's job with the same command is not ours to stop
            ours = [int(pid) for pid in found if os.path.realpath(f"/proc/{pid}/cwd") == str(work.resolve())]
            if ours:
                os.kill(ours[0], signal.SIGTERM)
                return ours[0]
        time.sleep(0.05)
    return None


def compare(resumed: Path, uninterrupted: Path, exact: bool) -> dict:
    import pandas as pd

    a, b = pd.read_parquet(resumed), pd.read_parquet(uninterrupted)
    worst = {m: float(((a[m] - b[m]).abs() / b[m].abs().clip(lower=1e-12)).max()) for m in METRICS}
    return {"rows": [len(a), len(b)], "max_rel_diff": worst,
            "equal": len(a) == len(b) and all(v <= (0 if exact else RTOL) for v in worst.values())}


def summarise_runs(work: Path) -> dict:
    """Per job: its rows' group sizes and whether each run's steps were captured."""
    import pandas as pd

    found = {}
    for model in MODELS:
        path = work / f"results/e2e/runs/{model}/{TASK}.parquet"
        if path.exists():
            df = pd.read_parquet(path)
            found[model] = {"group_sizes": df["group_size"].tolist(), "captured": bool(df["captured"].all())}
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cpu", action="store_true", help="tiny shapes on the CPU (no GPU, the CI's run)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work, oks = copy_repository(args.out / "repo", args.cpu), []

    def row(step: str, ok: bool, **fields) -> None:
        oks.append(ok)
        emit(step=step, ok=ok, **fields)

    expect("step", ["stopped", "resumed", "uninterrupted", "gpus", "runs", "resume equals uninterrupted"])
    first = snakemake(work, args.out / "snakemake-1.log", stop_job_after_checkpoint=True)
    train_log = work / f"results/e2e/logs/train/{STOPPED}/{TASK}.log"
    last = train_log.read_text().splitlines()[-1] if train_log.exists() else ""
    row("stopped", first["stopped_pid"] is not None and "stopped by SIGTERM" in last, **first, job_last_line=last)
    second = snakemake(work, args.out / "snakemake-2.log")
    row("resumed", second["exit"] == 0, **second)
    job_config = next((work / "results/configs").glob("*.yaml"), None)
    cmd = [sys.executable, "-m", "deltanet", "train", "--variant", STOPPED, "--task", TASK, "--config", str(job_config),
           "--scale", "e2e", "--out", str(args.out / "uninterrupted.parquet")]  # fmt: skip
    started = time.monotonic()
    alone = subprocess.run(cmd, cwd=work, env=environment(work), capture_output=True, text=True)
    row("uninterrupted", alone.returncode == 0, exit=alone.returncode, seconds=round(time.monotonic() - started, 1),
        tail=alone.stderr.splitlines()[-3:])  # fmt: skip
    logs = {m: work / f"results/e2e/logs/train/{m}/{TASK}.log" for m in MODELS}
    gpus = {m: next((ln for ln in log.read_text().splitlines() if "GPU" in ln), "") if log.exists() else ""
            for m, log in logs.items()}  # fmt: skip
    row("gpus", args.cpu or all(gpus.values()), jobs=gpus)
    runs = summarise_runs(work)
    row("runs", len(runs) == len(MODELS) and all(r["group_sizes"] == [MEMBERS] * MEMBERS and (args.cpu or r["captured"])
                                                 for r in runs.values()), jobs=runs)  # fmt: skip
    resumed, uninterrupted = work / f"results/e2e/runs/{STOPPED}/{TASK}.parquet", args.out / "uninterrupted.parquet"
    same = compare(resumed, uninterrupted, exact=args.cpu) if resumed.exists() and uninterrupted.exists() else {}
    row("resume equals uninterrupted", same.get("equal", False), **same)
    return 0 if all(oks) else 1


if __name__ == "__main__":
    sys.exit(main())
