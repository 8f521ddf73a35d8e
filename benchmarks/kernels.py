"""Time our Triton chunk kernels against fla and the naive chunk loop at the shapes the training jobs launch.

    python benchmarks/kernels.py [--config config.yaml] [--scale full] [--warm-fla I/N]
    python benchmarks/kernels.py --aot-check [--D 32 64 128 256] [--chunks 16 32 64]

On CUDA, one row per shape in bf16 (median ms of forward and forward+backward, ``triton.testing.do_bench``):

- first the goal shape B=4 T=2048 H=8 D=64 for both rules (issue 9: ≥ 20× the naive loop, ≥ 1.0× fla), at the
  scale's chunk size;
- then the scale's own shapes, as its jobs launch them: DeltaNet (full scale: 4 heads × 32) and Gated DeltaNet (the
  reference profile: 6 heads, keys 256, values 512) at batch ``optim.batch_size`` and the MAD sequence lengths
  128, 256, 512, 1024, with the scale's chunk size (reference profile: 32); the kernels do not specialise on the
  length (``deltanet/ops/kernels/launch.py``, ``LENGTH_ARGS``), so 128 times what a job's 127 runs.

Implementations: ours, fla's ``chunk_delta_rule`` / ``chunk_gated_delta_rule`` when importable (its own chunk, 64),
and the naive chunk loop (at the goal shape only). Beside each time, each implementation's bf16 error against the fp32 naive loop: the worst
RMS-ratio over o and every gradient, on the first ``ERR_BATCH`` sequences of the shape (drawn by the ops' test
harness; the timing batch repeats them). Each row is printed as soon as it is measured (``rows.emit``), with the
seconds of first calls (compilation, fla's autotuning: ``warmup_s``) and of timing (``measure_s``); a markdown
table follows at the end.

``--warm-fla I/N``: fla only, once at every row's shapes, for the I-th of N shares of the shape groups, so that its
compilation and autotuning happen before the timing run.

``--aot-check`` (no GPU needed): compiles every kernel specialisation for sm_90 (H100/H200) with the launch
configuration the wrapper would use, and reports registers, spill stack and shared memory; it fails if a kernel the
dispatch would launch (within ``MAX_KEY_DIM``) needs more shared memory than an H100 block may have (227 KiB), i.e.
if it would fail to launch there; shapes beyond ``MAX_KEY_DIM`` are shown as refused.

On CPU the same rows run at tiny shapes in the Triton interpreter (fp32; ~1 ms per program instance, so the times
mean nothing there): they show the kernels and this script work.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rows import emit, expect  # noqa: E402  (benchmarks/ is this script's folder)

from deltanet.ops.kernels.launch import CHUNK_SIZES, enable_interpreter, interpreter_enabled  # noqa: E402
from deltanet.ops.testing import forward_backward, make_inputs, rms_ratio  # noqa: E402

JOB_LENGTHS = (128, 256, 512, 1024)  # the MAD grid's sequence lengths from the baseline settings' 128 up
ERR_BATCH = 16  # errors on 16 sequences: divisible by 16 like batch 128, so Triton reuses the same specialisation
IMPLS = ("ours", "fla", "naive")


@dataclass(frozen=True)
class Group:
    """Shapes that share compiled kernels: one rule, batch, heads, head dims and chunk size; several lengths."""

    name: str
    op: str  # "delta" | "gated"
    B: int
    Ts: tuple[int, ...]
    H: int
    Dk: int
    Dv: int
    C: int
    timed: tuple[str, ...] = IMPLS  # the implementations timed at these shapes

    def label(self, T: int) -> str:
        return f"{self.op} B={self.B} T={T} H={self.H} Dk={self.Dk} Dv={self.Dv} C={self.C}"


def shape_groups(config_path: Path, scale_name: str, cuda: bool) -> list[Group]:
    """The goal shape, then the scale's DeltaNet and Gated DeltaNet shapes; tiny shapes without CUDA."""
    if not cuda:
        return [Group("tiny delta", "delta", 1, (32,), 1, 16, 16, 16),
                Group("tiny gated", "gated", 1, (32,), 1, 16, 32, 16)]  # fmt: skip
    from deltanet.config import load_config
    from deltanet.model import ModelConfig

    scale = load_config(config_path)["scales"][scale_name]
    model = ModelConfig(vocab_size=2, **scale["model"])
    B, C = scale["optim"]["batch_size"], model.chunk_size
    # the goal shape first (the figure issue 9 set); the naive loop only there (0.77 s a step at the jobs' batch)
    goal = [Group(f"goal {op}", op, 4, (2048,), 8, 64, 64, C) for op in ("delta", "gated")]
    return goal + [Group(f"{scale_name} {op}", op, B, JOB_LENGTHS, *model.layer_shape(op), C, ("ours", "fla"))
                   for op in ("delta", "gated")]  # fmt: skip


def implementations(op: str, chunk_size: int, names=IMPLS) -> dict:
    """name -> fn(**inputs) -> (o, final state) for the harness's :func:`forward_backward` (fla: a dummy state)."""
    from deltanet.ops.delta_rule.chunk import chunk_delta_rule
    from deltanet.ops.delta_rule.naive import delta_rule_chunkwise
    from deltanet.ops.gated_delta_rule.chunk import chunk_gated_delta_rule
    from deltanet.ops.gated_delta_rule.naive import gated_delta_rule_chunkwise

    ours, naive = (chunk_gated_delta_rule, gated_delta_rule_chunkwise) if op == "gated" else (
        chunk_delta_rule, delta_rule_chunkwise)  # fmt: skip
    impls = {"ours": lambda **x: ours(**x, chunk_size=chunk_size),
             "naive": lambda **x: naive(**x, chunk_size=chunk_size)}  # fmt: skip
    if "fla" in names:
        try:
            if op == "gated":
                from fla.ops.gated_delta_rule import chunk_gated_delta_rule as fla_fn
            else:
                from fla.ops.delta_rule import chunk_delta_rule as fla_fn
            # keyword arguments: fla's positional order differs from ours after beta (docs/deltanet-math.md §2.3)
            impls["fla"] = lambda **x: (fla_fn(**x)[0], x["q"].new_zeros(()))
        except Exception as exc:  # not installed, or fails to import
            print(f"fla not importable ({type(exc).__name__}: {exc}); no fla figures", file=sys.stderr)
    return {name: impls[name] for name in names if name in impls}


def inputs(group: Group, T: int, dtype: torch.dtype, device: str) -> tuple[dict, dict]:
    """The harness's inputs for the error (first ``ERR_BATCH`` sequences) and, repeated to the batch, for timing."""
    b = min(group.B, ERR_BATCH)
    small = make_inputs(b, T, group.H, group.Dk, group.Dv, gated=group.op == "gated", dtype=dtype, device=device)
    full = {n: x.repeat(group.B // b, *[1] * (x.dim() - 1)).requires_grad_() for n, x in small.items()}
    return small, full


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_once(fn, x: dict, do: torch.Tensor) -> None:
    fn(**x)[0].backward(do)


def timed_ms(fn, grads: list, device: str) -> float:
    """Median ms (``do_bench``) on CUDA; one call's wall time in the interpreter."""
    if device == "cuda":
        from triton.testing import do_bench

        return do_bench(fn, warmup=5, rep=50, grad_to_none=grads)
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def measure(group: Group, T: int, impls: dict, dtype: torch.dtype, device: str) -> dict:
    """One row: each implementation's fwd and fwd+bwd ms and worst RMS-ratio error against the fp32 naive loop."""
    label = {torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]
    row = {"shape": group.label(T), "dtype": label, "err_batch": min(group.B, ERR_BATCH)}
    ref_inputs, _ = inputs(group, T, torch.float32, device)
    ref = forward_backward(implementations(group.op, group.C, ["naive"])["naive"], ref_inputs, use_state=False)
    small, full = inputs(group, T, dtype, device)
    do = torch.randn(group.B, T, group.H, group.Dv, device=device, dtype=dtype)
    warmup = measuring = 0.0
    for name, fn in impls.items():
        try:
            start = time.perf_counter()
            out = forward_backward(fn, small, use_state=False)  # first calls: compilation, autotuning
            run_once(fn, full, do)
            sync(device)
            middle = time.perf_counter()
            row[f"{name}_err"] = max(rms_ratio(r, out[n]) for n, r in ref.items() if n != "final_state")
            with torch.no_grad():
                row[f"{name}_fwd_ms"] = timed_ms(lambda fn=fn: fn(**full), [], device)
            row[f"{name}_fwdbwd_ms"] = timed_ms(lambda fn=fn: run_once(fn, full, do), list(full.values()), device)
            warmup, measuring = warmup + middle - start, measuring + time.perf_counter() - middle
        except Exception as exc:  # one failing implementation (out of memory, say) should not hide the others
            row[f"{name}_failed"] = f"{type(exc).__name__}: {exc}"[:200]
    for other in ("fla", "naive"):
        for pass_ in ("fwd", "fwdbwd"):
            if f"{other}_{pass_}_ms" in row and f"ours_{pass_}_ms" in row:
                row[f"{other}/ours_{pass_}"] = row[f"{other}_{pass_}_ms"] / row[f"ours_{pass_}_ms"]
    if device == "cuda":
        torch.cuda.empty_cache()
    return {**row, "warmup_s": round(warmup, 2), "measure_s": round(measuring, 2)}


def warm_fla(groups: list[Group], share: int, shares: int, dtype: torch.dtype, device: str) -> None:
    """Run fla once at every row's shapes, this share of the groups: it compiles and autotunes fla's kernels (ours
    are compiled by ``benchmarks/kernel_plan.py --warm``)."""
    pairs = [(g, "fla") for g in groups][share::shares]
    expect("warm", [f"{g.name} {name}" for g, name in pairs])
    for g, name in pairs:
        fn = implementations(g.op, g.C, [name]).get(name)
        if fn is None:
            emit(warm=f"{g.name} {name}", skipped="not importable")
            continue
        start = time.perf_counter()
        for T in g.Ts:
            small, full = inputs(g, T, dtype, device)
            forward_backward(fn, small, use_state=False)
            run_once(fn, full, torch.randn(g.B, T, g.H, g.Dv, device=device, dtype=dtype))
            sync(device)
        emit(warm=f"{g.name} {name}", warmup_s=round(time.perf_counter() - start, 2))


SMEM_LIMIT = 232448  # bytes of shared memory per block on sm_90 (227 KiB)
AOT_DIMS = (32, 64, 128, 256)  # every head dim a profile uses (256: fla's Gated DeltaNet keys, the reference profile)


def aot_check(dims=AOT_DIMS, chunks=CHUNK_SIZES, dtypes=("bf16", "fp32")) -> int:
    """Compile every kernel for sm_90 without a GPU. Returns 1 when a kernel the dispatch would launch (within
    ``MAX_KEY_DIM``) is over the shared-memory limit; shapes beyond it are compiled and shown as ``refused``."""
    import re
    import subprocess
    import tempfile

    if interpreter_enabled():
        print("--aot-check compiles real kernels: unset TRITON_INTERPRET")
        return 1
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from deltanet.ops.kernels import backward, chunk_output, chunk_state, wy
    from deltanet.ops.kernels.launch import kernels_fit, launch_config

    cuobjdump = Path(triton.__file__).parent / "backends/nvidia/bin/cuobjdump"
    half_args = {"q_ptr", "k_ptr", "v_ptr", "beta_ptr", "o_ptr", "do_ptr", "dq_ptr", "dk_ptr", "dv_ptr", "dbeta_ptr"}
    torch_dt = {"bf16": torch.bfloat16, "fp32": torch.float32}
    bad = spilling = 0
    for D in dims:
        for C in chunks:
            for dt in dtypes:
                cfg = launch_config(D, D, C, torch_dt[dt], interpreted=False)
                for use_g in (False, True):
                    base = dict(H=8, DK=D, DV=D, C=C, BK=cfg["BK"], NK=cfg["NK"], USE_G=use_g, PREC=cfg["PREC"],
                                FUSE_DQK=cfg["FUSE_DQK"])
                    kernels = [
                        (wy.wy_fwd_kernel, {**base, "BV": cfg["BV_o"], "NV": cfg["NV_o"]}, 3),
                        (chunk_state.fwd_h_kernel, {**base, "BV": cfg["BV_h"], "HAS_H0": True, "DROP_UPDATE": False},
                         cfg["S_h"]),
                        (chunk_output.fwd_o_kernel, {**base, "BV": cfg["BV_o"]}, 3),
                        (chunk_state.bwd_dh_kernel, {**base, "BV": cfg["BV_h"], "HAS_DHT": True}, cfg["S_h"]),
                        (backward.bwd_vloop_kernel, {**base, "BV": cfg["BV_m"], "NV": cfg["NV_m"]}, 2),
                        (backward.bwd_post_kernel, base, 1),
                    ] + ([] if cfg["FUSE_DQK"] else [(backward.bwd_dqk_kernel, base, 1)])
                    for fn, consts, stages in kernels:
                        consts = {k: v for k, v in consts.items() if k in fn.arg_names}
                        sig = {n: "constexpr" if n in consts else
                               ("*" + (dt if n in half_args else "fp32")) if n.endswith("_ptr") else
                               "fp32" if n == "scale" else "i32" for n in fn.arg_names}  # fmt: skip
                        k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts),
                                           target=GPUTarget("cuda", 90, 32),
                                           options={"num_warps": cfg["W"], "num_stages": stages})  # fmt: skip
                        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
                            f.write(k.asm["cubin"])
                            f.flush()
                            usage = subprocess.run([str(cuobjdump), "--dump-resource-usage", f.name],
                                                   capture_output=True, text=True).stdout  # fmt: skip
                        m = re.search(r"REG:(\d+).*?STACK:(\d+)", usage)
                        smem = k.metadata.shared
                        over = smem > SMEM_LIMIT
                        launched = kernels_fit(C, D)
                        bad += over and launched
                        spilling += launched and dt == "bf16" and m.group(2) != "0"
                        status = ("OVER" if over else "ok  ") + ("" if launched else " (refused by MAX_KEY_DIM)")
                        print(f"{status} {fn.__name__:17s} D={D:3d} C={C:2d} {dt} gated={int(use_g)} "
                              f"BV={consts.get('BV', 0):2d} warps={cfg['W']} regs={m.group(1)} spill_stack={m.group(2)} "
                              f"smem={smem}", flush=True)  # fmt: skip
    print(f"{bad} launched kernel specialisations over the sm_90 shared-memory limit ({SMEM_LIMIT} bytes)")
    print(f"{spilling} launched bf16 kernel specialisations with a spill stack (registers spilled to memory)")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "config.yaml")
    parser.add_argument("--scale", default="full", help="the scale whose job shapes are timed (on CUDA)")
    parser.add_argument("--warm-fla", metavar="I/N", help="run fla only, the I-th of N shares of the shapes")
    parser.add_argument("--aot-check", action="store_true", help="compile for sm_90 without a GPU; check smem")
    parser.add_argument("--D", nargs="+", type=int, default=list(AOT_DIMS), help="head dims for --aot-check")
    parser.add_argument("--chunks", nargs="+", type=int, default=list(CHUNK_SIZES), help="chunks for --aot-check")
    args = parser.parse_args(argv)
    if args.aot_check:
        return aot_check(dims=tuple(args.D), chunks=tuple(args.chunks))
    cuda = torch.cuda.is_available()
    if not cuda:
        try:
            enable_interpreter()
        except RuntimeError as exc:
            print(f"no CUDA device, and the Triton interpreter cannot be enabled: {exc}", file=sys.stderr)
            return 1
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    groups = shape_groups(args.config, args.scale, cuda)
    if args.warm_fla:
        share, shares = (int(n) for n in args.warm_fla.split("/"))
        warm_fla(groups, share, shares, dtype, device)
        return 0
    where = torch.cuda.get_device_name() if cuda else "cpu, Triton interpreter: tiny shapes, times mean nothing"
    print(f"device: {where}; torch {torch.__version__}; TRITON_CACHE_DIR="
          f"{os.environ.get('TRITON_CACHE_DIR', '~/.triton/cache')}", file=sys.stderr)  # fmt: skip
    expect("shape", [g.label(T) for g in groups for T in g.Ts])
    rows = []
    for g in groups:
        impls = implementations(g.op, g.C, g.timed)
        for T in g.Ts:
            rows.append(measure(g, T, impls, dtype, device))
            emit(**rows[-1])
    import pandas as pd

    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4g"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
