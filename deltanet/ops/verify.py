"""``deltanet verify-kernels``: check our Triton kernels against the naive chunk loop before any training.

For every case of a grid (both rules; ragged lengths; several batch/head/dim/chunk sizes; with and without an
initial state; fp32 and fp16, plus bf16 on CUDA) it runs forward and backward — the loss is (o·dO).sum() +
(S_T·dS_T).sum() with random dO, dS_T — through the kernel and through the naive op on the same inputs, and
compares o, the final state and every gradient (q, k, v, β, g, initial state). Error measures follow the fla
convention (``deltanet.ops.compare``): max |ref − out| and RMS(ref − out) / RMS(ref); a check passes when
max abs ≤ 1e-6 or the RMS ratio is below its tolerance, with no NaN.

Output: one parquet row per (case, tensor) and a markdown summary, both written atomically. Exit status 1 (and
a message listing every failing case) when any check fails, so no training job starts on a wrong kernel.

On CPU the kernels run in the Triton interpreter (``TRITON_INTERPRET=1`` is set here when needed; bf16 is
broken there and skipped) on small shapes, in about a minute. On CUDA the run also compiles every kernel
specialisation the training jobs use, warming the Triton cache (``TRITON_CACHE_DIR``, default
``~/.triton/cache``) that later jobs on the same node reuse.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from deltanet.io import atomic_path, write_text_atomic
from deltanet.ops.compare import max_abs, rms_ratio

ATOL = 1e-6
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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


def tolerance(op: str, dtype: str, tensor: str) -> float:
    """fla convention: fp16/bf16 o/state 0.006, gradients 0.008, gated dβ/dg 0.02; fp32 1e-4."""
    if dtype == "fp32":
        return 1e-4
    if tensor in ("o", "final_state"):
        return 0.006
    if op == "gated" and tensor in ("dbeta", "dg"):
        return 0.02
    return 0.008


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


def make_inputs(case: Case, device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    B, T, H, D = case.B, case.T, case.H, case.D
    dt = DTYPES[case.dtype]
    q = F.normalize(torch.randn(B, T, H, D, generator=gen), dim=-1)
    k = F.normalize(torch.randn(B, T, H, D, generator=gen), dim=-1)
    v = torch.randn(B, T, H, D, generator=gen)
    beta = torch.rand(B, T, H, generator=gen)
    inputs = {"q": q.to(dt), "k": k.to(dt), "v": v.to(dt)}
    if case.op == "gated":
        inputs["g"] = F.logsigmoid(torch.randn(B, T, H, generator=gen)) / 4  # fp32, as the model makes it
    inputs["beta"] = beta.to(dt)
    if case.h0:
        inputs["initial_state"] = torch.randn(B, H, D, D, generator=gen)
    return {n: x.to(device) for n, x in inputs.items()}


def forward_backward(fn, inputs: dict, chunk_size: int, seed: int = 1) -> dict[str, torch.Tensor]:
    leaves = {n: x.detach().clone().requires_grad_() for n, x in inputs.items()}
    o, state = fn(**leaves, chunk_size=chunk_size)
    gen = torch.Generator().manual_seed(seed)
    do = torch.randn(o.shape, generator=gen).to(o.device, o.dtype)
    dstate = torch.randn(state.shape, generator=gen).to(state.device)
    loss = (o.float() * do.float()).sum() + (state * dstate).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    out = {"o": o.detach(), "final_state": state.detach()}
    out.update({f"d{n}": g for n, g in zip(leaves, grads)})
    return out


def run_case(case: Case, device: str) -> list[dict]:
    from deltanet.ops.delta_rule.chunk import chunk_delta_rule
    from deltanet.ops.delta_rule.naive import delta_rule_chunkwise
    from deltanet.ops.gated_delta_rule.chunk import chunk_gated_delta_rule
    from deltanet.ops.gated_delta_rule.naive import gated_delta_rule_chunkwise

    kernel, naive = (chunk_gated_delta_rule, gated_delta_rule_chunkwise) if case.op == "gated" else (
        chunk_delta_rule, delta_rule_chunkwise)  # fmt: skip
    inputs = make_inputs(case, device)
    start = time.perf_counter()
    out = forward_backward(kernel, inputs, case.chunk_size)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    ref = forward_backward(naive, inputs, case.chunk_size)
    rows = []
    for tensor, r in ref.items():
        x = out[tensor]
        abs_err, ratio = max_abs(r, x), rms_ratio(r, x)
        tol = tolerance(case.op, case.dtype, tensor)
        nan = bool(torch.isnan(x).any() or torch.isinf(x).any())
        passed = (not nan) and (abs_err <= ATOL or ratio < tol)
        rows.append({**asdict(case), "device": device, "tensor": tensor, "max_abs_err": abs_err,
                     "rms_ratio_err": ratio, "tolerance": tol, "passed": passed, "kernel_seconds": seconds})  # fmt: skip
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="deltanet verify-kernels", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="parquet of checks, e.g. results/tiny/kernels/verify.parquet")
    parser.add_argument("--summary", required=True, type=Path, help="markdown summary, e.g. results/tiny/kernels/verify.md")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    parser.add_argument("--quick", action="store_true", help="a smaller grid (tests, smoke runs)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    args = parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("verify-kernels: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    if device == "cpu":
        from deltanet.ops.dispatch import enable_interpreter

        enable_interpreter()  # must happen before the kernels are decorated (or it reloads them)
    start = time.perf_counter()
    rows = []
    for case in make_cases(device, args.quick):
        try:
            rows += run_case(case, device)
        except Exception as exc:  # a crashing kernel is a failed case, not a crashed rule
            rows.append({**asdict(case), "device": device, "tensor": f"error: {type(exc).__name__}: {exc}"[:300],
                         "max_abs_err": float("nan"), "rms_ratio_err": float("nan"), "tolerance": float("nan"),
                         "passed": False, "kernel_seconds": float("nan")})  # fmt: skip
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


if __name__ == "__main__":
    sys.exit(main())
