"""Forward stage 1, per chunk: G, the UT transform T = (I + A)⁻¹, the WY factors W = T X, U = T Y, and the
chunk's attention P = (Q Kᵀ ⊙ Γ ⊙ M)·scale, computed once here for the output and the backward (which would
otherwise each recompute Q Kᵀ over the whole key dimension, per value block)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from deltanet.ops.kernels.launch import LENGTH_ARGS
from deltanet.ops.kernels.primitives import gamma, load_rows, load_scalars, mm, store_tile, ut_solve


@triton.jit(do_not_specialize=LENGTH_ARGS)
def wy_fwd_kernel(
    q_ptr, k_ptr, v_ptr, beta_ptr, g_ptr, w_ptr, u_ptr, tm_ptr, p_ptr, gc_ptr, scale,
    T, Tp,
    H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr, C: tl.constexpr, BK: tl.constexpr, NK: tl.constexpr,
    BV: tl.constexpr, NV: tl.constexpr, USE_G: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    n, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    r = tl.arange(0, C)
    t0 = n * C
    row0 = bh * Tp + t0
    beta = load_scalars(beta_ptr, b, h, t0, T, H, C)
    kkt = tl.zeros([C, C], dtype=tl.float32)
    qk = tl.zeros([C, C], dtype=tl.float32)
    for kb in range(NK):  # K Kᵀ and Q Kᵀ, one key tile at a time (fla: chunk_scaled_dot_kkt.py)
        k = load_rows(k_ptr, b, h, t0, T, H, DK, kb * BK, C, BK)
        kkt += mm(k, tl.trans(k), PREC)
        qk += mm(load_rows(q_ptr, b, h, t0, T, H, DK, kb * BK, C, BK), tl.trans(k), PREC)
    strict = r[:, None] > r[None, :]
    if USE_G:
        G = tl.cumsum(load_scalars(g_ptr, b, h, t0, T, H, C), 0)
        tl.store(gc_ptr + row0 + r, G)
        gam = gamma(G, r)
        a = tl.where(strict, beta[:, None] * kkt * gam, 0.0)
        p = qk * gam
        xs = beta * tl.exp(G)
    else:
        a = tl.where(strict, beta[:, None] * kkt, 0.0)
        p = tl.where(r[:, None] >= r[None, :], qk, 0.0)
        xs = beta
    store_tile(p_ptr, p * scale, row0, 0, C, C, C)
    tm = ut_solve(a, r, C)
    store_tile(tm_ptr, tm, row0, 0, C, C, C)
    for kb in range(NK):
        x = load_rows(k_ptr, b, h, t0, T, H, DK, kb * BK, C, BK) * xs[:, None]
        store_tile(w_ptr, mm(tm, x, PREC), row0, kb * BK, C, BK, DK)
    for iv in range(NV):
        y = load_rows(v_ptr, b, h, t0, T, H, DV, iv * BV, C, BV) * beta[:, None]
        store_tile(u_ptr, mm(tm, y, PREC), row0, iv * BV, C, BV, DV)


def wy_forward(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, g: Tensor | None, scale: float,
               m: dict) -> tuple[Tensor, ...]:  # fmt: skip
    """(W, U, T, P, G) fp32, heads-first ``[B·H, Tp, ·]``; G is None for the ungated rule."""
    B, H, Tp, DK, DV, C = m["B"], m["H"], m["Tp"], m["DK"], m["DV"], m["C"]
    use_g = g is not None
    w = k.new_empty(B * H, Tp, DK, dtype=torch.float32)
    u = k.new_empty(B * H, Tp, DV, dtype=torch.float32)
    tm, p = (k.new_empty(B * H, Tp, C, dtype=torch.float32) for _ in range(2))
    gc = k.new_empty(B * H, Tp, dtype=torch.float32) if use_g else None
    # without a gate, g_ptr and gc_ptr are never read (USE_G=False): any tensor stands in for them
    wy_fwd_kernel[(m["NT"], B * H)](
        q, k, v, beta, g if use_g else beta, w, u, tm, p, gc if use_g else w, scale, m["T"], Tp,
        H=H, DK=DK, DV=DV, C=C, BK=m["BK"], NK=m["NK"], BV=m["BV_o"], NV=m["NV_o"], USE_G=use_g, PREC=m["PREC"],
        num_warps=m["W"],
    )  # fmt: skip
    return w, u, tm, p, gc
