"""``deltanet verify-kernels``: the kernel check (:mod:`deltanet.verify_kernels`), written where the workflow reads it.

    deltanet verify-kernels --out verify.parquet --summary verify.md [--device cpu|cuda] [--quick]

One parquet row per (case, tensor) and a markdown summary, both written atomically. Exit status 1 (and a message
listing every failing check) when any check fails, so no training job starts on a wrong kernel; 2 for ``--device
cuda`` without a CUDA device. ``--inject-fault drop_state_update`` (hidden; for tests) runs a deliberately wrong
kernel, to show the check fails.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from deltanet.io import atomic_path, write_text_atomic
from deltanet.ops.kernels.launch import FAULTS, enable_interpreter
from deltanet.verify_kernels import Case, check_kernels, summary_markdown


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="deltanet verify-kernels", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path,
                        help="parquet of checks, e.g. results/tiny/kernels/verify.parquet")
    parser.add_argument("--summary", required=True, type=Path,
                        help="markdown summary, e.g. results/tiny/kernels/verify.md")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    parser.add_argument("--quick", action="store_true", help="a smaller grid (tests, smoke runs)")
    parser.add_argument("--inject-fault", choices=FAULTS, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    import pandas as pd

    args = parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("verify-kernels: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    if device == "cpu":
        try:
            enable_interpreter()  # must happen before triton is imported
        except RuntimeError:  # triton already imported for the compiler in this process: rerun in a fresh one
            env = {**os.environ, "TRITON_INTERPRET": "1"}
            cmd = [sys.executable, "-m", "deltanet", "verify-kernels", *argv]
            return subprocess.run(cmd, env=env).returncode
    start = time.perf_counter()
    rows = check_kernels(device, args.quick, args.inject_fault)
    seconds = time.perf_counter() - start
    df = pd.DataFrame(rows)
    with atomic_path(args.out) as tmp:
        df.to_parquet(tmp, index=False)
    write_text_atomic(args.summary, summary_markdown(df, device, args.quick, seconds))
    failed = df[~df["passed"]]
    if len(failed):
        lines = [f"verify-kernels: {len(failed)} of {len(df)} checks FAILED — do not train on these kernels:"]
        for row in failed.itertuples(index=False):
            case = Case(row.op, row.B, row.T, row.H, row.D, row.chunk_size, row.dtype, row.h0)
            lines.append(f"  {case.label}: {row.tensor} rms_ratio={row.rms_ratio_err:.2e} "
                         f"tol={row.tolerance:g} max_abs={row.max_abs_err:.2e}")  # fmt: skip
        print("\n".join(lines), file=sys.stderr)
        return 1
    print(f"verify-kernels: all {len(df)} checks passed on {device} in {seconds:.1f} s → {args.out}")
    return 0
