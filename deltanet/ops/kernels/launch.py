"""How the kernels are launched: interpreter or compiler (the one place that decides), chunk sizes, block sizes.

Triton chooses interpreter-or-compiler when a function is decorated: its own standard library at ``import triton``,
our kernels when their stage modules are imported. So the switch (``TRITON_INTERPRET=1``) must be set before either
happens, which is why this module does not import triton and the stage modules are imported on first use.
"""

from __future__ import annotations

import os
import sys

import torch
from torch import Tensor

from deltanet.machine import triton_interpreter_requested

# The chunk sizes the kernels are written for (the naive ops take any), each with the widest key head they launch:
# every kernel fits the sm_90 (H100/H200) shared memory, 227 KiB per block — compiled without a GPU by
# ``python benchmarks/kernels.py --aot-check``. With key tiles a 256-wide head at chunk 64 fits too (≤ 100 KiB, it
# needed 448 KiB untiled), but its bf16 bwd_dh spills (~0.5 KB of stack): not launched until tuned and timed.
MAX_KEY_DIM = {16: 256, 32: 256, 64: 128}
CHUNK_SIZES = tuple(MAX_KEY_DIM)
# The kernels' length arguments (rows T, padded rows Tp, chunks NT): never specialised. Triton otherwise compiles an
# integer argument anew for each of its classes (equal to 1, divisible by 16, neither), and the tasks' lengths are
# seq_len − 1 (127, 255, …: deltanet/tasks/generator_kit.py) where benchmarks time 128: every job would compile
# the kernels again (~10–15 s each on an H200, README "Measured on GPU"). fla marks its lengths the same way
# (``do_not_specialize=['T']`` in fla/ops/common/chunk_delta_h.py). ``benchmarks/kernel_plan.py`` derives the
# specialisations a GPU run compiles.
LENGTH_ARGS = ("T", "Tp", "NT")
# test-only faults, passed in by ``deltanet verify-kernels --inject-fault`` to show it catches a wrong kernel
FAULTS = ("drop_state_update",)


def kernels_fit(chunk_size: int, key_dim: int) -> bool:
    """Whether the kernels launch at this chunk size and key head dim (see ``MAX_KEY_DIM``)."""
    return key_dim <= MAX_KEY_DIM.get(chunk_size, 0)


def _triton_interpreted() -> bool | None:
    """None if triton is not imported yet; else whether it was imported in interpreter mode (its own standard
    library, e.g. ``tl.zeros``, is decorated at import, so the switch must be set before ``import triton``)."""
    if "triton" not in sys.modules:
        return None
    import triton.language as tl

    return type(tl.zeros).__name__ == "InterpretedFunction"


def enable_interpreter() -> None:
    """Run the Triton kernels in the CPU interpreter by setting ``TRITON_INTERPRET=1``.

    Works only before triton is imported in this process (or when it was imported in interpreter mode already);
    otherwise it raises RuntimeError: run in a fresh process with ``TRITON_INTERPRET=1``."""
    if _triton_interpreted() is False:
        raise RuntimeError(
            "triton was already imported in this process without TRITON_INTERPRET=1, so its kernels cannot run on "
            "CPU here; start a fresh process with TRITON_INTERPRET=1 set"
        )
    os.environ["TRITON_INTERPRET"] = "1"


def interpreter_enabled() -> bool:
    """Whether the kernels run (or will run, once imported) in the Triton interpreter in this process."""
    state = _triton_interpreted()
    return triton_interpreter_requested() if state is None else state


# triton.next_power_of_2 / triton.cdiv, without importing triton (see the module docstring)
def _next_power_of_2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def launch_config(DK: int, DV: int, C: int, dtype: torch.dtype, interpreted: bool) -> dict:
    """Block sizes, warps and stages per kernel family.

    Keys run in ``NK`` tiles of ``BK`` ≤ 64 columns (the state kernels keep the [Dk, BV] state as up to four such
    tiles, like fla's ``chunk_delta_h.py``). Interpreter: one value block everywhere (fewer program instances).
    GPU: chosen so that every kernel compiles for sm_90 without register spills in bf16 at Dk = Dv = 256, chunk 32
    (Gated DeltaNet's reference shape), and with shared memory under the H100/H200 limit (227 KiB) up to
    ``MAX_KEY_DIM`` — both checked without a GPU (``python benchmarks/kernels.py --aot-check``). Families: ``h`` =
    the sequential state kernels (fwd_h, bwd_dh), ``o`` = wy/fwd_o, ``m`` = the per-chunk backward. fp32 inputs use
    3-pass tf32 dots (≈ fp32 accuracy on tensor cores), fp16/bf16 inputs tf32 dots; accumulation is fp32 throughout.
    """
    KP = max(16, _next_power_of_2(DK))  # the key head, padded
    BK = min(KP, 64)
    NK = _cdiv(DK, BK)
    if NK > 4:
        raise ValueError(f"the kernels hold at most 4 key tiles of {BK}: Dk={DK} is too wide")
    BVfull = max(16, _next_power_of_2(DV))
    if interpreted:
        bv_h = bv_o = bv_m = BVfull
    else:
        bv_h = min(BVfull, 64 if KP <= 64 else 32)
        bv_o = min(BVfull, 64)
        bv_m = min(BVfull, 64 if BK <= 32 else 16)
    # S_h: pipelining stages of the sequential kernels (a second stage made bwd_dh spill from Dk·C = 64·32 up);
    # FUSE_DQK: dq, dk in bwd_post_kernel (no bwd_dqk_kernel) for one small key tile, where that fits in registers
    cfg = dict(BK=BK, NK=NK, PREC="tf32x3" if dtype == torch.float32 else "tf32", W=4 if KP * C <= 1024 else 8,
               S_h=1 if KP * C >= 64 * 32 else 2, FUSE_DQK=KP * C <= 32 * 32)  # fmt: skip
    for name, bv in (("h", bv_h), ("o", bv_o), ("m", bv_m)):
        cfg[f"BV_{name}"], cfg[f"NV_{name}"] = bv, _cdiv(DV, bv)
    return cfg


def launch_meta(q: Tensor, v: Tensor, chunk_size: int) -> dict:
    """Shapes (B, T, H, DK, DV, C, NT chunks, Tp padded rows) and :func:`launch_config` of one call."""
    B, T, H, DK = q.shape
    DV = v.shape[-1]
    NT = _cdiv(T, chunk_size)
    cfg = launch_config(DK, DV, chunk_size, q.dtype, interpreter_enabled())
    return dict(B=B, T=T, H=H, DK=DK, DV=DV, C=chunk_size, NT=NT, Tp=NT * chunk_size, **cfg)
