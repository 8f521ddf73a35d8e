"""Forward output stage, per chunk and value block: O = (Q ⊙ e^G) S_n + P Vn, P = Q Kᵀ ⊙ Γ ⊙ M (from the WY stage)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from deltanet.ops.kernels.launch import LENGTH_ARGS
from deltanet.ops.kernels.primitives import load_rows, load_state, load_tile, mm, store_rows


@triton.jit(do_not_specialize=LENGTH_ARGS)
def fwd_o_kernel(
    q_ptr, gc_ptr, h_ptr, p_ptr, vn_ptr, o_ptr, scale,
    T, Tp, NT,
    H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr, C: tl.constexpr, BK: tl.constexpr, NK: tl.constexpr,
    BV: tl.constexpr, USE_G: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    iv, n, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = bh // H, bh % H
    r = tl.arange(0, C)
    t0 = n * C
    v0 = iv * BV
    qs = tl.zeros([C, BV], dtype=tl.float32)  # Q S_n
    for kb in range(NK):  # one key tile at a time (fla: chunk_o.py)
        q = load_rows(q_ptr, b, h, t0, T, H, DK, kb * BK, C, BK)
        qs += mm(q, load_state(h_ptr + (bh * NT + n) * DK * DV, kb * BK, v0, BK, BV, DK, DV), PREC)
    if USE_G:
        qs = qs * tl.exp(tl.load(gc_ptr + bh * Tp + t0 + r))[:, None]
    p = load_tile(p_ptr, bh * Tp + t0, 0, C, C, C)
    o = qs * scale + mm(p, load_tile(vn_ptr, bh * Tp + t0, v0, C, BV, DV), PREC)
    store_rows(o_ptr, o, b, h, t0, T, H, DV, v0, C, BV)


def output_forward(q: Tensor, v: Tensor, gc: Tensor | None, p: Tensor, h: Tensor, vn: Tensor, scale: float,
                   m: dict) -> Tensor:  # fmt: skip
    """o ``[B, T, H, Dv]`` in q's dtype (as the naive op returns it)."""
    B, H, Tp, DK, DV, C = m["B"], m["H"], m["Tp"], m["DK"], m["DV"], m["C"]
    use_g = gc is not None
    o = torch.empty(v.shape, dtype=q.dtype, device=v.device)
    fwd_o_kernel[(m["NV_o"], m["NT"], B * H)](
        q, gc if use_g else vn, h, p, vn, o, scale, m["T"], Tp, m["NT"],
        H=H, DK=DK, DV=DV, C=C, BK=m["BK"], NK=m["NK"], BV=m["BV_o"], USE_G=use_g, PREC=m["PREC"], num_warps=m["W"],
    )  # fmt: skip
    return o
