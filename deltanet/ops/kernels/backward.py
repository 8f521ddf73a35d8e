"""Per-chunk backward: dq, dk, dv, dβ, dg from the states, their gradients and the saved WY factors.

Three kernels, laid out like fla's ``chunk_bwd_dqkwg`` (``fla/ops/common/chunk_o.py``, one program per chunk and
key tile, looping over value blocks) and ``prepare_wy_repr_bwd`` (``fla/ops/gated_delta_rule/wy_fast.py``, one
program per chunk, looping over key tiles):

- ``bwd_vloop_kernel`` [NK, NT, BH]: the sums over the value dimension per key tile (dO S_nᵀ, Vn dS_{n+1}ᵀ,
  −dVn S_nᵀ and the tile's share of dG); the first tile's program also writes dv and the value sums without keys;
- ``bwd_post_kernel`` [NT, BH]: the [C, C] algebra over the whole key dimension (K Kᵀ, dW Kᵀ), through W = T X
  and the UT solve to dβ, dg and dKK, the gradient of K Kᵀ;
- ``bwd_dqk_kernel`` [NK, NT, BH]: dq and dk per key tile.

Key tiles bound the registers: at Dk = 256 no kernel spills in bf16 (``benchmarks/kernels.py --aot-check``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from deltanet.ops.kernels.launch import LENGTH_ARGS
from deltanet.ops.kernels.primitives import (gamma, load_rows, load_scalars, load_state, load_tile, mm, store_rows,
                                             store_scalars, store_tile)  # fmt: skip


@triton.jit(do_not_specialize=LENGTH_ARGS)
def bwd_vloop_kernel(
    q_ptr, k_ptr, v_ptr, beta_ptr, gc_ptr, tm_ptr, h_ptr, dh_ptr, vn_ptr, dvn_ptr, do_ptr,
    dv_ptr, dqa_ptr, dkt_ptr, dw_ptr, datt_ptr, dtm_ptr, dbp_ptr, dgp_ptr, dgl_ptr, scale,
    T, Tp, NT,
    H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr, C: tl.constexpr, BK: tl.constexpr, NK: tl.constexpr,
    BV: tl.constexpr, NV: tl.constexpr, USE_G: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Per chunk and key tile, the sums over the value dimension, and the tile's share of dG (gated); the first key
    tile's program also does the sums without keys (dO Vnᵀ, dU Yᵀ, dβ's share) and writes dv = diag(β) Tᵀ dVn."""
    ik, n, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = bh // H, bh % H
    t0 = n * C
    row0 = bh * Tp + t0
    k0 = ik * BK
    hn = (bh * NT + n) * DK * DV
    beta = load_scalars(beta_ptr, b, h, t0, T, H, C)
    tmT = tl.trans(load_tile(tm_ptr, row0, 0, C, C, C))
    dq_acc = tl.zeros([C, BK], dtype=tl.float32)  # dO S_nᵀ
    dkt = tl.zeros([C, BK], dtype=tl.float32)  # Vn dS_{n+1}ᵀ   (grad of K̃ = K ⊙ e^{G_L − G})
    dw = tl.zeros([C, BK], dtype=tl.float32)  # −dVn S_nᵀ
    dgl = tl.sum(tl.zeros([C], dtype=tl.float32), 0)  # Σ dS_{n+1} ⊙ S_n over this key tile
    datt = tl.zeros([C, C], dtype=tl.float32)  # dO Vnᵀ
    dtm = tl.zeros([C, C], dtype=tl.float32)  # dU Yᵀ
    dbeta = tl.zeros([C], dtype=tl.float32)
    for iv in range(NV):
        v0 = iv * BV
        S = load_state(h_ptr + hn, k0, v0, BK, BV, DK, DV)
        dS = load_state(dh_ptr + hn, k0, v0, BK, BV, DK, DV)
        vn = load_tile(vn_ptr, row0, v0, C, BV, DV)
        dvn = load_tile(dvn_ptr, row0, v0, C, BV, DV)
        do = load_rows(do_ptr, b, h, t0, T, H, DV, v0, C, BV)
        dq_acc += mm(do, tl.trans(S), PREC)
        dkt += mm(vn, tl.trans(dS), PREC)
        dw += mm(-dvn, tl.trans(S), PREC)
        if USE_G:
            dgl += tl.sum(tl.sum(dS * S, 1), 0)
        if ik == 0:
            v = load_rows(v_ptr, b, h, t0, T, H, DV, v0, C, BV)
            datt += mm(do, tl.trans(vn), PREC)
            dtm += mm(dvn, tl.trans(v * beta[:, None]), PREC)
            dy = mm(tmT, dvn, PREC)
            store_rows(dv_ptr, dy * beta[:, None], b, h, t0, T, H, DV, v0, C, BV)
            dbeta += tl.sum(dy * v, 1)
    if ik == 0:
        store_tile(datt_ptr, datt, row0, 0, C, C, C)
        store_tile(dtm_ptr, dtm, row0, 0, C, C, C)
        tl.store(dbp_ptr + row0 + tl.arange(0, C), dbeta)
    store_tile(dw_ptr, dw, row0, k0, C, BK, DK)
    store_tile(dqa_ptr, dq_acc, row0, k0, C, BK, DK)
    store_tile(dkt_ptr, dkt, row0, k0, C, BK, DK)
    if USE_G:  # dG's rows Σ_k dQ̃ ⊙ Q̃ − dK̃ ⊙ K̃ and dG_L's Σ dS ⊙ S + Σ dK̃ ⊙ K̃, over this key tile
        r = tl.arange(0, C)
        G = tl.load(gc_ptr + row0 + r)
        g_last = tl.load(gc_ptr + row0 + C - 1)
        f = tl.sum(dkt * load_rows(k_ptr, b, h, t0, T, H, DK, k0, C, BK), 1) * tl.exp(g_last - G)
        part = (bh * NT + n) * NK + ik
        dqq = tl.sum(dq_acc * load_rows(q_ptr, b, h, t0, T, H, DK, k0, C, BK), 1) * (tl.exp(G) * scale)
        tl.store(dgp_ptr + part * C + r, dqq - f)
        tl.store(dgl_ptr + part, dgl * tl.exp(g_last) + tl.sum(f, 0))


@triton.jit
def _gates(gc_ptr, row0, C: tl.constexpr, USE_G: tl.constexpr):
    """(e^G, e^{G_L − G}, Γ ⊙ M) of one chunk; ones and the causal mask without a gate."""
    r = tl.arange(0, C)
    if USE_G:
        G = tl.load(gc_ptr + row0 + r)
        eg = tl.exp(G)
        egl = tl.exp(tl.load(gc_ptr + row0 + C - 1) - G)
        gam = gamma(G, r)
    else:
        eg = tl.full([C], 1.0, tl.float32)
        egl = tl.full([C], 1.0, tl.float32)
        gam = tl.where(r[:, None] >= r[None, :], 1.0, 0.0)
    return eg, egl, gam


@triton.jit(do_not_specialize=LENGTH_ARGS)
def bwd_post_kernel(
    q_ptr, k_ptr, beta_ptr, gc_ptr, tm_ptr, p_ptr, dqa_ptr, dkt_ptr, dw_ptr, datt_ptr, dtm_ptr, dbp_ptr, dgp_ptr,
    dgl_ptr, dkk_ptr, dq_ptr, dk_ptr, dbeta_ptr, dg_ptr, scale,
    T, Tp, NT,
    H: tl.constexpr, DK: tl.constexpr, C: tl.constexpr, BK: tl.constexpr, NK: tl.constexpr,
    USE_G: tl.constexpr, FUSE_DQK: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Per chunk, the [C, C] algebra over the whole key dimension (K Kᵀ, dW Kᵀ, one key tile at a time), through
    W = T X and the UT solve to dβ, dg and dKK = dB + dBᵀ (the gradient of K Kᵀ). Then dq and dk here (FUSE_DQK: one
    small key tile, which saves small heads such as DeltaNet's 32 a launch and a round trip through memory), or dKK
    stored for :func:`bwd_dqk_kernel`."""
    n, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    r = tl.arange(0, C)
    t0 = n * C
    row0 = bh * Tp + t0
    kkt = tl.zeros([C, C], dtype=tl.float32)
    dwk = tl.zeros([C, C], dtype=tl.float32)  # dW Kᵀ
    for kb in range(NK):
        k = load_rows(k_ptr, b, h, t0, T, H, DK, kb * BK, C, BK)
        kkt += mm(k, tl.trans(k), PREC)
        dwk += mm(load_tile(dw_ptr, row0, kb * BK, C, BK, DK), tl.trans(k), PREC)
    eg, egl, gam = _gates(gc_ptr, row0, C, USE_G)
    beta = load_scalars(beta_ptr, b, h, t0, T, H, C)
    xs = beta * eg  # X = K ⊙ xs
    tm = load_tile(tm_ptr, row0, 0, C, C, C)
    tmT = tl.trans(tm)
    dtm = load_tile(dtm_ptr, row0, 0, C, C, C) + dwk * xs[None, :]  # through W = T X: dT += dW Xᵀ
    dxk = tl.sum(tm * dwk, 0)  # Σ_k dX ⊙ K with dX = Tᵀ dW
    # through T = (I + A)⁻¹: dA = −Tᵀ dT Tᵀ, strictly lower; A = diag(β) (K Kᵀ ⊙ Γ)
    da = tl.where(r[:, None] > r[None, :], -mm(mm(tmT, dtm, PREC), tmT, PREC), 0.0)
    dbk = da * beta[:, None] * gam
    store_scalars(dbeta_ptr, tl.load(dbp_ptr + row0 + r) + tl.sum(da * kkt * gam, 1) + dxk * eg, b, h, t0, T, H, C)
    if USE_G:
        e = load_tile(datt_ptr, row0, 0, C, C, C) * load_tile(p_ptr, row0, 0, C, C, C)  # dP ⊙ P
        e2 = dbk * kkt
        dG = tl.sum(e, 1) - tl.sum(e, 0) + tl.sum(e2, 1) - tl.sum(e2, 0) + dxk * xs
        dgl = tl.sum(tl.zeros([C], dtype=tl.float32), 0)
        for j in range(NK):  # the key tiles' shares from bwd_vloop_kernel
            dG += tl.load(dgp_ptr + ((bh * NT + n) * NK + j) * C + r)
            dgl += tl.load(dgl_ptr + (bh * NT + n) * NK + j)
        dG += tl.where(r == C - 1, dgl, 0.0)
        dg = tl.sum(tl.where(r[:, None] >= r[None, :], dG[:, None], 0.0), 0)  # dg_j = Σ_{i ≥ j} dG_i
        store_scalars(dg_ptr, dg, b, h, t0, T, H, C)
    if FUSE_DQK:
        dp = tl.where(r[:, None] >= r[None, :], load_tile(datt_ptr, row0, 0, C, C, C), 0.0) * gam
        _dq_dk(q_ptr, k_ptr, dqa_ptr, dkt_ptr, dw_ptr, dq_ptr, dk_ptr, scale, b, h, t0, row0, T, 0, tmT, dp,
               dbk + tl.trans(dbk), eg, egl, xs, H, DK, C, BK, PREC)  # fmt: skip
    else:
        store_tile(dkk_ptr, dbk + tl.trans(dbk), row0, 0, C, C, C)


@triton.jit
def _dq_dk(q_ptr, k_ptr, dqa_ptr, dkt_ptr, dw_ptr, dq_ptr, dk_ptr, scale, b, h, t0, row0, T, k0, tmT, dp, dkk, eg,
           egl, xs, H: tl.constexpr, DK: tl.constexpr, C: tl.constexpr, BK: tl.constexpr,
           PREC: tl.constexpr):  # fmt: skip
    """Key tile k0 of dq = dQ̃ ⊙ e^G + dP K and dk = dPᵀ Q + dK̃ ⊙ e^{G_L − G} + dKK K + dX ⊙ β e^G (dX = Tᵀ dW)."""
    q = load_rows(q_ptr, b, h, t0, T, H, DK, k0, C, BK) * scale
    k = load_rows(k_ptr, b, h, t0, T, H, DK, k0, C, BK)
    dq = load_tile(dqa_ptr, row0, k0, C, BK, DK) * eg[:, None] + mm(dp, k, PREC)
    store_rows(dq_ptr, dq * scale, b, h, t0, T, H, DK, k0, C, BK)
    dx = mm(tmT, load_tile(dw_ptr, row0, k0, C, BK, DK), PREC)
    dk = mm(tl.trans(dp), q, PREC) + load_tile(dkt_ptr, row0, k0, C, BK, DK) * egl[:, None] + dx * xs[:, None]
    store_rows(dk_ptr, dk + mm(dkk, k, PREC), b, h, t0, T, H, DK, k0, C, BK)


@triton.jit(do_not_specialize=LENGTH_ARGS)
def bwd_dqk_kernel(
    q_ptr, k_ptr, beta_ptr, gc_ptr, tm_ptr, dqa_ptr, dkt_ptr, dw_ptr, datt_ptr, dkk_ptr, dq_ptr, dk_ptr, scale,
    T, Tp,
    H: tl.constexpr, DK: tl.constexpr, C: tl.constexpr, BK: tl.constexpr, USE_G: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Per chunk and key tile, dq and dk (:func:`_dq_dk`), from :func:`bwd_post_kernel`'s dKK (several key tiles)."""
    ik, n, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = bh // H, bh % H
    r = tl.arange(0, C)
    t0 = n * C
    row0 = bh * Tp + t0
    eg, egl, gam = _gates(gc_ptr, row0, C, USE_G)
    dp = tl.where(r[:, None] >= r[None, :], load_tile(datt_ptr, row0, 0, C, C, C), 0.0) * gam
    tmT = tl.trans(load_tile(tm_ptr, row0, 0, C, C, C))
    xs = load_scalars(beta_ptr, b, h, t0, T, H, C) * eg
    _dq_dk(q_ptr, k_ptr, dqa_ptr, dkt_ptr, dw_ptr, dq_ptr, dk_ptr, scale, b, h, t0, row0, T, ik * BK, tmT, dp,
           load_tile(dkk_ptr, row0, 0, C, C, C), eg, egl, xs, H, DK, C, BK, PREC)  # fmt: skip


def chunk_grads(q: Tensor, k: Tensor, v: Tensor, g: Tensor | None, beta: Tensor, scale: float, saved: tuple,
                states: tuple, do: Tensor, m: dict) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor]:  # fmt: skip
    """(dq, dk, dv, dg or None, dβ) in the inputs' dtypes; ``saved`` = (W, U, T, P, G), ``states`` =
    (S_n, dS_{n+1}, Vn, dVn) from :mod:`deltanet.ops.kernels.chunk_state`."""
    B, H, NT, NK, Tp, DK, DV, C = m["B"], m["H"], m["NT"], m["NK"], m["Tp"], m["DK"], m["DV"], m["C"]
    _, _, tm, p, gc = saved
    h, dh, vn, dvn = states
    use_g = gc is not None
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dbeta = torch.empty_like(beta)
    dg = torch.empty_like(g) if use_g else None
    # fp32 partials handed from kernel to kernel
    dqa, dkt, dw = (q.new_empty(B * H, Tp, DK, dtype=torch.float32) for _ in range(3))
    datt, dtm = (q.new_empty(B * H, Tp, C, dtype=torch.float32) for _ in range(2))
    dkk = dtm if m["FUSE_DQK"] else q.new_empty(B * H, Tp, C, dtype=torch.float32)  # stored only when not fused
    dbp = q.new_empty(B * H, Tp, dtype=torch.float32)
    # without a gate, gc_ptr, dgp_ptr, dgl_ptr and dg_ptr are never touched: any tensor stands in for them
    gc_or, dg_or = (gc, dg) if use_g else (dbp, dbeta)
    dgp = q.new_empty(B * H, NT, NK, C, dtype=torch.float32) if use_g else dbp
    dgl = q.new_empty(B * H, NT, NK, dtype=torch.float32) if use_g else dbp
    bwd_vloop_kernel[(NK, NT, B * H)](
        q, k, v, beta, gc_or, tm, h, dh, vn, dvn, do, dv, dqa, dkt, dw, datt, dtm, dbp, dgp, dgl, scale,
        m["T"], Tp, NT,
        H=H, DK=DK, DV=DV, C=C, BK=m["BK"], NK=NK, BV=m["BV_m"], NV=m["NV_m"], USE_G=use_g, PREC=m["PREC"],
        num_warps=m["W"], num_stages=2,
    )  # fmt: skip
    bwd_post_kernel[(NT, B * H)](
        q, k, beta, gc_or, tm, p, dqa, dkt, dw, datt, dtm, dbp, dgp, dgl, dkk, dq, dk, dbeta, dg_or, scale,
        m["T"], Tp, NT,
        H=H, DK=DK, C=C, BK=m["BK"], NK=NK, USE_G=use_g, FUSE_DQK=m["FUSE_DQK"], PREC=m["PREC"], num_warps=m["W"],
        num_stages=1,
    )  # fmt: skip
    if not m["FUSE_DQK"]:
        bwd_dqk_kernel[(NK, NT, B * H)](
            q, k, beta, gc_or, tm, dqa, dkt, dw, datt, dkk, dq, dk, scale, m["T"], Tp,
            H=H, DK=DK, C=C, BK=m["BK"], USE_G=use_g, PREC=m["PREC"], num_warps=m["W"], num_stages=1,
        )  # fmt: skip
    return dq, dk, dv, dg, dbeta
