"""Forward stage 1, per chunk: G, the UT transform T = (I + A)⁻¹ and the WY factors W = T X, U = T Y."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from deltanet.ops.kernels.primitives import gamma, load_rows, load_scalars, mm, ut_solve


@triton.jit
def wy_fwd_kernel(
    k_ptr, v_ptr, beta_ptr, g_ptr, w_ptr, u_ptr, tm_ptr, gc_ptr,
    T, Tp,
    H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    NV: tl.constexpr, USE_G: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    n, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    r = tl.arange(0, C)
    t = n * C + r
    ck = tl.arange(0, BK)
    k = load_rows(k_ptr, b, h, t, T, H, DK, ck)
    beta = load_scalars(beta_ptr, b, h, t, T, H)
    kkt = mm(k, tl.trans(k), PREC)
    strict = r[:, None] > r[None, :]
    if USE_G:
        G = tl.cumsum(load_scalars(g_ptr, b, h, t, T, H), 0)
        tl.store(gc_ptr + bh * Tp + t, G)
        a = tl.where(strict, beta[:, None] * kkt * gamma(G, r), 0.0)
        x = k * (beta * tl.exp(G))[:, None]
    else:
        a = tl.where(strict, beta[:, None] * kkt, 0.0)
        x = k * beta[:, None]
    tm = ut_solve(a, r, C)
    tl.store(tm_ptr + (bh * Tp + t[:, None]) * C + r[None, :], tm)
    w = mm(tm, x, PREC)
    tl.store(w_ptr + (bh * Tp + t[:, None]) * DK + ck[None, :], w, mask=ck[None, :] < DK)
    for iv in range(NV):
        cv = iv * BV + tl.arange(0, BV)
        y = load_rows(v_ptr, b, h, t, T, H, DV, cv) * beta[:, None]
        u = mm(tm, y, PREC)
        tl.store(u_ptr + (bh * Tp + t[:, None]) * DV + cv[None, :], u, mask=cv[None, :] < DV)


def wy_forward(k: Tensor, v: Tensor, beta: Tensor, g: Tensor | None, m: dict) -> tuple[Tensor, ...]:
    """(W, U, T, G) fp32, heads-first ``[B·H, Tp, ·]``; G is None for the ungated rule."""
    B, H, Tp, DK, DV, C = m["B"], m["H"], m["Tp"], m["DK"], m["DV"], m["C"]
    use_g = g is not None
    w = k.new_empty(B * H, Tp, DK, dtype=torch.float32)
    u = k.new_empty(B * H, Tp, DV, dtype=torch.float32)
    tm = k.new_empty(B * H, Tp, C, dtype=torch.float32)
    gc = k.new_empty(B * H, Tp, dtype=torch.float32) if use_g else None
    # without a gate, g_ptr and gc_ptr are never read (USE_G=False): any tensor stands in for them
    wy_fwd_kernel[(m["NT"], B * H)](
        k, v, beta, g if use_g else beta, w, u, tm, gc if use_g else w, m["T"], Tp,
        H=H, DK=DK, DV=DV, C=C, BK=m["BK"], BV=m["BV_o"], NV=m["NV_o"], USE_G=use_g, PREC=m["PREC"], num_warps=m["W"],
    )  # fmt: skip
    return w, u, tm, gc
