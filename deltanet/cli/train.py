"""``deltanet train``: train every run of one variant × task into a parquet file.

    deltanet train --variant delta_net_4layer --task context_recall --config config.yaml \\
        --out results/runs/tiny/delta_net_4layer/context_recall.parquet [--scale tiny] [--device auto|cpu|cuda] \\
        [--threads N] [--checkpoint-dir DIR] [--cache-dir DIR]

The engine is :mod:`deltanet.training` (protocol, run loop, job, provenance). This module parses and checks the
arguments: a bad one (unknown variant, task or scale, malformed config, unwritable output, no CUDA for ``--device
cuda`` or for a GPU scale under ``auto``) prints one ``deltanet train: error: ...`` line and exits 2. Exit codes:
0 done (diverged runs included), 1 an output could not be written, 2 bad arguments, 143 stopped by SIGTERM (1 and
143 with the line saying where a rerun resumes).

glibc malloc fix (``docs/cpu-notes.md`` §1): the variables must be in the environment at process start,
so when they are missing and torch is not imported yet (a command-line start), ``main`` re-executes the process
with them set. Torch is imported only after that check, so the re-exec costs a bare Python start.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import deltanet
from deltanet.import_graph import train_shared_code_sha256
from deltanet.training.device import DEVICE_CHOICES, training_device

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "17179869184"}
EXIT_BAD_ARGS = 2


class UsageError(Exception):
    """A bad argument; the message names it."""


def _ensure_malloc_env(argv: list[str]) -> None:
    missing = any(os.environ.get(k) is None for k in MALLOC_ENV)
    if not missing or platform.system() != "Linux" or os.environ.get("DELTANET_NO_REEXEC"):
        return
    if "torch" in sys.modules:  # in-process call (tests, notebooks): too late to fix, say so
        print("deltanet train: note: MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ unset; CPU steps may stall "
              "(docs/cpu-notes.md §1)", file=sys.stderr)  # fmt: skip
        return
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in MALLOC_ENV.items()}}
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "deltanet", "train", *argv], env)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="deltanet train", description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", required=True, help="variant name (deltanet variants lists them)")
    p.add_argument("--task", required=True, help="MAD task id (deltanet tasks lists them)")
    p.add_argument("--config", required=True, type=Path, help="config.yaml")
    p.add_argument("--out", required=True, type=Path, help="output parquet file (one row per run)")
    p.add_argument("--scale", help="scale name under `scales` (default: config 'scale', auto resolved)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                   help="default: CUDA if available; a scale with resources.gpu > 0 refuses to train without it")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--checkpoint-dir", type=Path, help="resume state while unfinished (default: <out>.ckpt/)")
    p.add_argument("--cache-dir", type=Path, help="dataset cache passed to the task generators")
    return p.parse_args(argv)


def _check_writable(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise UsageError(f"{what} {path} is not writable ({err.strerror or err})") from err


def make_job(args: argparse.Namespace):
    """Check every argument and build the :class:`~deltanet.training.job.Job` (imports torch)."""
    from deltanet.config import ConfigError, load_config
    from deltanet.names import unknown_name
    from deltanet.selection import resolve_scale
    from deltanet.tasks import get_task
    from deltanet.variants import get_variant

    try:
        config = load_config(args.config)
    except ConfigError as err:
        raise UsageError(str(err)) from err
    scale = args.scale or resolve_scale(config)
    if scale not in config["scales"]:
        raise UsageError(unknown_name("scale", scale, list(config["scales"])))
    try:
        get_variant(args.variant)
        get_task(args.task)
    except ValueError as err:
        raise UsageError(str(err)) from err
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    try:  # before anything is written: a GPU scale where no GPU is visible writes nothing
        device = training_device(args.device, config["scales"][scale]["resources"]["gpu"])
    except ValueError as err:
        raise UsageError(f"--device: {err}") from err
    if args.out.exists() and args.out.is_dir():
        raise UsageError(f"output {args.out} is a directory")
    _check_writable(args.out.parent, "output directory")
    ckpt_dir = args.checkpoint_dir or args.out.with_name(args.out.name + ".ckpt")
    _check_writable(ckpt_dir.parent, "checkpoint directory")

    import torch

    from deltanet.training.job import Job

    if args.threads:
        torch.set_num_threads(args.threads)
    shared_code = train_shared_code_sha256(Path(deltanet.__file__).parent, args.variant, args.task)
    return Job(args.variant, args.task, scale, config, args.out, ckpt_dir, device, shared_code, args.cache_dir)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _ensure_malloc_env(argv)
    try:
        args = parse_args(argv)
    except SystemExit as exit_:  # argparse already printed usage + the error line
        return int(exit_.code or 0)
    try:
        job = make_job(args)
    except UsageError as err:
        message = " ".join(str(err).split())  # one line, even for multi-line YAML parser messages
        print(f"deltanet train: error: {message}", file=sys.stderr)
        return EXIT_BAD_ARGS
    from deltanet.training.job import JobStopped, run_job

    try:
        run_job(job)
    except JobStopped as stop:
        print(f"deltanet train: {stop}", file=sys.stderr, flush=True)
        return stop.exit_code
    return 0

