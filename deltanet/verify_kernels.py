"""The kernel check: our Triton kernels against the naive chunk loop, before any training (``deltanet verify-kernels``).

For every case of a grid (both rules; ragged lengths; several batch/head/dim/chunk sizes; with and without an
initial state; fp32 and fp16, plus bf16 on CUDA) it runs forward and backward — the loss is (o·dO).sum() +
(S_T·dS_T).sum() with random dO, dS_T — through the kernel and through the naive op on the same inputs, and
compares o, the final state and every gradient (q, k, v, β, g, initial state). Inputs, error measures, tolerances
and the pass/fail rule are the ops' test harness (``deltanet/ops/testing.py``, the fla convention): a check passes
when max |ref − out| ≤ 1e-6 or RMS(ref − out) / RMS(ref) is below its tolerance, with no NaN or Inf.

Output: one row per (case, tensor) (:func:`run_case`) and a markdown summary (:func:`summary_markdown`); the
command (:mod:`deltanet.cli.verify_kernels`) writes them and fails when any check fails, so no training job starts
on a wrong kernel.

On CPU the kernels run in the Triton interpreter (the command sets ``TRITON_INTERPRET=1``; bf16 is broken
there and skipped) on small shapes, in about a minute. On CUDA the run also compiles every kernel
specialisation the training jobs use, warming the Triton cache (``TRITON_CACHE_DIR``, default
``~/.triton/cache``) that later jobs on the same node reuse.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass

import torch

from deltanet.ops.testing import DTYPES, Error, forward_backward, make_inputs, tolerance


@dataclass(frozen=True)
class Case:
    op: str  # "delta" | "gated"
    B: int
    T: int
    H: int
    D: int
    chunk_size: int
    dtype: str
    h0: bool

    @property
    def label(self) -> str:
        return (f"{self.op} B={self.B} T={self.T} H={self.H} D={self.D} C={self.chunk_size} {self.dtype} "
                f"{'h0' if self.h0 else 'no-h0'}")  # fmt: skip


# (B, T, H, D, chunk_size, h0): ragged T everywhere (not a multiple of the chunk size) except one.
CPU_SHAPES = [(1, 50, 2, 16, 16, True), (2, 100, 2, 32, 32, False), (1, 130, 1, 64, 64, True)]
CPU_QUICK_SHAPES = [(1, 50, 2, 16, 16, True)]
CUDA_SHAPES = CPU_SHAPES + [
    (1, 64, 2, 32, 16, False),
    (8, 128, 4, 32, 64, False),  # the full-scale training shape (MAD seq 128, 4 heads × 32, chunk 64)
    (8, 128, 4, 32, 16, False),  # the tiny-scale chunk size
    (2, 1000, 4, 64, 64, True),
    (2, 2048, 8, 128, 64, True),
    (1, 777, 3, 100, 32, True),  # head dim not a power of two
]
CUDA_QUICK_SHAPES = [(8, 128, 4, 32, 64, False), (8, 128, 4, 32, 16, False), (2, 1000, 4, 64, 64, True)]


def make_cases(device: str, quick: bool) -> list[Case]:
    cuda = device == "cuda"
    shapes = (CUDA_QUICK_SHAPES if quick else CUDA_SHAPES) if cuda else (CPU_QUICK_SHAPES if quick else CPU_SHAPES)
    dtypes = ["fp32", "fp16", "bf16"] if cuda else ["fp32", "fp16"]
    return [Case(op, *shape[:5], dtype, shape[5]) for op in ("delta", "gated") for dtype in dtypes for shape in shapes]


def run_case(case: Case, device: str, fault: str | None = None) -> list[dict]:
    from deltanet.ops.delta_rule.naive import delta_rule_chunkwise
    from deltanet.ops.gated_delta_rule.naive import gated_delta_rule_chunkwise
    from deltanet.ops.kernels.function import chunk_rule

    gated = case.op == "gated"
    kernel = functools.partial(chunk_rule, fault=fault)  # chunk_delta_rule / chunk_gated_delta_rule, plus the fault
    naive = gated_delta_rule_chunkwise if gated else delta_rule_chunkwise
    dtype = DTYPES[case.dtype]
    inputs = make_inputs(case.B, case.T, case.H, case.D, case.D, gated=gated, dtype=dtype, h0=case.h0, device=device)
    start = time.perf_counter()
    out = forward_backward(kernel, inputs, chunk_size=case.chunk_size)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    ref = forward_backward(naive, inputs, chunk_size=case.chunk_size)
    rows = []
    for tensor, r in ref.items():
        err, tol = Error.of(r, out[tensor]), tolerance(dtype, tensor, gated)
        rows.append({**asdict(case), "device": device, "tensor": tensor, "max_abs_err": err.max_abs,
                     "rms_ratio_err": err.rms_ratio, "tolerance": tol, "passed": err.within(tol),
                     "kernel_seconds": seconds})  # fmt: skip
    return rows


def check_kernels(device: str, quick: bool, fault: str | None = None) -> list[dict]:
    """The rows of :func:`run_case` for every case of the grid; a case that raises is one failed row naming the
    error (a crashing kernel is a failed check, not a crashed command)."""
    rows = []
    for case in make_cases(device, quick):
        try:
            rows += run_case(case, device, fault)
        except Exception as exc:
            rows.append({**asdict(case), "device": device, "tensor": f"error: {type(exc).__name__}: {exc}"[:300],
                         "max_abs_err": float("nan"), "rms_ratio_err": float("nan"), "tolerance": float("nan"),
                         "passed": False, "kernel_seconds": float("nan")})  # fmt: skip
    return rows


def summary_markdown(df, device: str, quick: bool, seconds: float) -> str:
    failed = df[~df["passed"]]
    n_cases = df.groupby(["op", "B", "T", "H", "D", "chunk_size", "dtype", "h0"]).ngroups
    lines = [
        "# Kernel verification",
        "",
        f"Device **{device}**{' (Triton interpreter)' if device == 'cpu' else ''}, "
        f"{'quick' if quick else 'full'} grid: {n_cases} cases, {len(df)} checks, **{len(failed)} failed**, "
        f"{seconds:.0f} s. Reference: the naive chunk loop on the same inputs; error = RMS(ref − out)/RMS(ref).",
        "",
        "Worst RMS-ratio error per op, dtype and tensor (tolerance in brackets):",
        "",
    ]
    worst = (df.groupby(["op", "dtype", "tensor"], sort=False)
             .agg(rms_ratio_err=("rms_ratio_err", "max"), max_abs_err=("max_abs_err", "max"),
                  tolerance=("tolerance", "max"), passed=("passed", "all"))
             .reset_index())  # fmt: skip
    table = worst.pivot_table(index=["op", "dtype"], columns="tensor", values="rms_ratio_err", sort=False)
    tol = worst.pivot_table(index=["op", "dtype"], columns="tensor", values="tolerance", sort=False)
    cells = table.map(lambda x: f"{x:.1e}" if x == x else "") + tol.map(lambda x: f" ({x:g})" if x == x else "")
    lines.append(cells.reset_index().to_markdown(index=False))
    if len(failed):
        lines += ["", "Failing checks:", ""]
        lines += [f"- {Case(*row[:8]).label}: {row.tensor} RMS ratio {row.rms_ratio_err:.2e} "
                  f"(tolerance {row.tolerance:g}), max abs {row.max_abs_err:.2e}"
                  for row in failed[["op", "B", "T", "H", "D", "chunk_size", "dtype", "h0", "tensor",
                                     "rms_ratio_err", "tolerance", "max_abs_err"]].itertuples(index=False)]  # fmt: skip
    return "\n".join(lines) + "\n"
