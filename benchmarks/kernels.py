"""Benchmark our Triton chunk kernels against the naive chunk loop (and fla, when importable).

    python benchmarks/kernels.py [--ops delta gated] [--T 512 2048 8192] [--D 64 128] [--csv out.csv]

On CUDA: forward and forward+backward time (median ms, ``triton.testing.do_bench``) at B=4, H=8, bf16, chunk 64, for
T ∈ {512, 2048, 8192} and D ∈ {64, 128}, printed as a table with speed-up ratios (naive / ours, fla / ours:
> 1 means ours is faster). Goals (issue 9): ≥ 20× the naive loop at T=2048, ≥ 1.0× fla.

``--aot-check`` (no GPU needed): compiles every kernel specialisation for sm_90 (H100/H200) with the launch
configuration the wrapper would use, and reports registers, spill stack and shared memory; it fails if a kernel the
dispatch would launch (within ``MAX_KEY_DIM``) needs more shared memory than an H100 block may have (227 KiB), i.e.
if it would fail to launch there; shapes beyond ``MAX_KEY_DIM`` are shown as refused.

On CPU timings mean nothing (the Triton interpreter is ~1 ms per program instance): it says so and runs one tiny
shape in the interpreter to show the kernels work.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deltanet.ops.kernels.launch import CHUNK_SIZES, enable_interpreter, interpreter_enabled  # noqa: E402
from deltanet.ops.testing import make_inputs as harness_inputs  # noqa: E402
from deltanet.ops.testing import rms_ratio  # noqa: E402


def make_inputs(op: str, B: int, T: int, H: int, D: int, dtype, device) -> dict:
    """The ops' test inputs (deltanet/ops/testing.py), as leaves that take gradients."""
    x = harness_inputs(B, T, H, D, D, gated=op == "gated", dtype=dtype, device=device)
    return {n: t.requires_grad_() for n, t in x.items()}


def implementations(op: str) -> dict:
    """name -> fn(inputs) -> o."""
    from deltanet.ops.delta_rule.chunk import chunk_delta_rule
    from deltanet.ops.delta_rule.naive import delta_rule_chunkwise
    from deltanet.ops.gated_delta_rule.chunk import chunk_gated_delta_rule
    from deltanet.ops.gated_delta_rule.naive import gated_delta_rule_chunkwise

    ours, naive = (chunk_gated_delta_rule, gated_delta_rule_chunkwise) if op == "gated" else (
        chunk_delta_rule, delta_rule_chunkwise)  # fmt: skip
    impls = {"ours": lambda x: ours(**x, chunk_size=64)[0], "naive": lambda x: naive(**x, chunk_size=64)[0]}
    try:
        if op == "gated":
            from fla.ops.gated_delta_rule import chunk_gated_delta_rule as fla_fn
        else:
            from fla.ops.delta_rule import chunk_delta_rule as fla_fn
        # keyword arguments: fla's positional order differs from ours after beta (docs/deltanet-math.md §2.3)
        impls["fla"] = lambda x: fla_fn(**x)[0]
    except Exception as exc:  # not installed, or fails to import
        print(f"fla not importable ({type(exc).__name__}); comparing with the naive loop only")
    return impls


def bench_cuda(ops, Ts, Ds, B=4, H=8, dtype=torch.bfloat16):
    import pandas as pd
    from triton.testing import do_bench

    rows = []
    for op in ops:
        impls = implementations(op)
        for D in Ds:
            for T in Ts:
                x = make_inputs(op, B, T, H, D, dtype, "cuda")
                do = torch.randn(B, T, H, D, device="cuda", dtype=dtype)
                row = {"op": op, "B": B, "T": T, "H": H, "D": D, "dtype": str(dtype).removeprefix("torch.")}
                for name, fn in impls.items():

                    def fwd_bwd(fn=fn):
                        fn(x).backward(do)

                    with torch.no_grad():
                        row[f"{name}_fwd_ms"] = do_bench(lambda fn=fn: fn(x), warmup=5, rep=50)
                    row[f"{name}_fwdbwd_ms"] = do_bench(fwd_bwd, warmup=5, rep=50, grad_to_none=list(x.values()))
                for other in [n for n in impls if n != "ours"]:
                    for pass_ in ("fwd", "fwdbwd"):
                        row[f"{other}/ours_{pass_}"] = row[f"{other}_{pass_}_ms"] / row[f"ours_{pass_}_ms"]
                rows.append(row)
                print(f"  {op} T={T} D={D}: ours fwd {row['ours_fwd_ms']:.3f} ms, fwd+bwd {row['ours_fwdbwd_ms']:.3f} ms",
                      flush=True)  # fmt: skip
    return pd.DataFrame(rows)


def tiny_cpu_demo() -> None:
    for op in ("delta", "gated"):
        impls = implementations(op)
        x = make_inputs(op, 1, 64, 2, 32, torch.float32, "cpu")
        t0 = time.perf_counter()
        o = impls["ours"](x)
        o.sum().backward()
        dt = time.perf_counter() - t0
        ref = impls["naive"]({n: t.detach() for n, t in x.items()})
        print(f"  {op}: B=1 T=64 H=2 D=32 fp32, fwd+bwd in the interpreter {dt:.2f} s, "
              f"RMS-ratio error of o vs naive {rms_ratio(ref, o):.1e}")  # fmt: skip


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
    bad = 0
    for D in dims:
        for C in chunks:
            for dt in dtypes:
                cfg = launch_config(D, D, C, torch_dt[dt], interpreted=False)
                for use_g in (False, True):
                    base = dict(H=8, DK=D, DV=D, C=C, BK=cfg["BK"], USE_G=use_g, PREC=cfg["PREC"])
                    kernels = [
                        (wy.wy_fwd_kernel, {**base, "BV": cfg["BV_o"], "NV": cfg["NV_o"]}, 3),
                        (chunk_state.fwd_h_kernel, {**base, "BV": cfg["BV_h"], "HAS_H0": True, "DROP_UPDATE": False},
                         cfg["S_h"]),
                        (chunk_output.fwd_o_kernel, {**base, "BV": cfg["BV_o"]}, 3),
                        (chunk_state.bwd_dh_kernel, {**base, "BV": cfg["BV_h"], "HAS_DHT": True}, cfg["S_h"]),
                        (backward.bwd_vloop_kernel, {**base, "BV": cfg["BV_m"], "NV": cfg["NV_m"]}, 2),
                        (backward.bwd_post_kernel, {k: v for k, v in base.items() if k != "DV"}, 1),
                    ]
                    for fn, consts, stages in kernels:
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
                        status = ("OVER" if over else "ok  ") + ("" if launched else " (refused by MAX_KEY_DIM)")
                        print(f"{status} {fn.__name__:17s} D={D:3d} C={C:2d} {dt} gated={int(use_g)} "
                              f"BV={consts.get('BV', 0):2d} warps={cfg['W']} regs={m.group(1)} spill_stack={m.group(2)} "
                              f"smem={smem}", flush=True)  # fmt: skip
    print(f"{bad} launched kernel specialisations over the sm_90 shared-memory limit ({SMEM_LIMIT} bytes)")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", nargs="+", default=["delta", "gated"], choices=["delta", "gated"])
    parser.add_argument("--T", nargs="+", type=int, default=[512, 2048, 8192])
    parser.add_argument("--D", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--csv", type=Path, help="also write the table as CSV")
    parser.add_argument("--aot-check", action="store_true", help="compile for sm_90 without a GPU; check smem")
    parser.add_argument("--chunks", nargs="+", type=int, default=list(CHUNK_SIZES), help="chunk sizes for --aot-check")
    args = parser.parse_args(argv)
    if args.aot_check:
        dims = AOT_DIMS if args.D == parser.get_default("D") else tuple(args.D)
        return aot_check(dims=dims, chunks=tuple(args.chunks))
    if not torch.cuda.is_available():
        print("No CUDA device: kernel timings need an NVIDIA GPU (on CPU the Triton interpreter runs the kernels "
              "~1000x slower, so its timings mean nothing). Running one tiny shape to show the kernels work:")  # fmt: skip
        try:
            enable_interpreter()
        except RuntimeError as exc:
            print(f"cannot run the interpreter demo: {exc}")
            return 1
        tiny_cpu_demo()
        return 0
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, TRITON_CACHE_DIR="
          f"{os.environ.get('TRITON_CACHE_DIR', '~/.triton/cache')}")  # fmt: skip
    df = bench_cuda(args.ops, args.T, args.D)
    print(df.to_markdown(index=False, floatfmt=".3f"))
    if args.csv:
        df.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
