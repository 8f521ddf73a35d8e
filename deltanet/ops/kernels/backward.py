"""Per-chunk backward: dq, dk, dv, dβ, dg from the states, their gradients and the saved WY factors.

Two kernels per chunk only to keep each one's shared memory under the sm_90 limit at Dk = 128: the value-block loop
(writes dv and fp32 partials), then the key-dimension algebra through the attention, W = T X and the UT solve.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from deltanet.ops.kernels.primitives import gamma, load_rows, load_scalars, mm, store_rows


@triton.jit
def bwd_vloop_kernel(
    q_ptr, k_ptr, v_ptr, beta_ptr, tm_ptr, h_ptr, dh_ptr, vn_ptr, dvn_ptr, do_ptr,
    dv_ptr, dqa_ptr, dkt_ptr, dw_ptr, datt_ptr, dtm_ptr, dbp_ptr, dgl_ptr,
    T, Tp, NT,
    H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    NV: tl.constexpr, USE_G: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Per chunk, the sums over the value dimension; writes dv and fp32 partials for :func:`bwd_post_kernel`."""
    n, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    r = tl.arange(0, C)
    t = n * C + r
    ck = tl.arange(0, BK)
    kmask = ck < DK
    beta = load_scalars(beta_ptr, b, h, t, T, H)
    tmT = tl.trans(tl.load(tm_ptr + (bh * Tp + t[:, None]) * C + r[None, :]))
    dq_acc = tl.zeros([C, BK], dtype=tl.float32)  # dO S_nᵀ
    datt = tl.zeros([C, C], dtype=tl.float32)  # dO Vnᵀ
    dkt = tl.zeros([C, BK], dtype=tl.float32)  # Vn dS_{n+1}ᵀ   (grad of K̃ = K ⊙ e^{G_L − G})
    dw = tl.zeros([C, BK], dtype=tl.float32)  # −dVn S_nᵀ
    dtm = tl.zeros([C, C], dtype=tl.float32)  # dU Yᵀ
    dbeta = tl.zeros([C], dtype=tl.float32)
    dgl = tl.sum(tl.zeros([C], dtype=tl.float32), 0)  # Σ dS_{n+1} ⊙ S_n
    for iv in range(NV):
        cv = iv * BV + tl.arange(0, BV)
        vmask = cv < DV
        smask = kmask[:, None] & vmask[None, :]
        soff = (bh * NT + n) * DK * DV + ck[:, None] * DV + cv[None, :]
        ioff = (bh * Tp + t[:, None]) * DV + cv[None, :]
        S = tl.load(h_ptr + soff, mask=smask, other=0.0)
        dS = tl.load(dh_ptr + soff, mask=smask, other=0.0)
        vn = tl.load(vn_ptr + ioff, mask=vmask[None, :], other=0.0)
        dvn = tl.load(dvn_ptr + ioff, mask=vmask[None, :], other=0.0)
        do = load_rows(do_ptr, b, h, t, T, H, DV, cv)
        v = load_rows(v_ptr, b, h, t, T, H, DV, cv)
        dq_acc += mm(do, tl.trans(S), PREC)
        datt += mm(do, tl.trans(vn), PREC)
        dkt += mm(vn, tl.trans(dS), PREC)
        dw -= mm(dvn, tl.trans(S), PREC)
        dtm += mm(dvn, tl.trans(v * beta[:, None]), PREC)
        dy = mm(tmT, dvn, PREC)
        store_rows(dv_ptr, dy * beta[:, None], b, h, t, T, H, DV, cv)
        dbeta += tl.sum(dy * v, 1)
        if USE_G:
            dgl += tl.sum(tl.sum(dS * S, 1), 0)
    koff = (bh * Tp + t[:, None]) * DK + ck[None, :]
    tl.store(dqa_ptr + koff, dq_acc, mask=kmask[None, :])
    tl.store(dkt_ptr + koff, dkt, mask=kmask[None, :])
    tl.store(dw_ptr + koff, dw, mask=kmask[None, :])
    coff = (bh * Tp + t[:, None]) * C + r[None, :]
    tl.store(datt_ptr + coff, datt)
    tl.store(dtm_ptr + coff, dtm)
    tl.store(dbp_ptr + bh * Tp + t, dbeta)
    if USE_G:
        tl.store(dgl_ptr + bh * NT + n, dgl)


@triton.jit
def bwd_post_kernel(
    q_ptr, k_ptr, beta_ptr, gc_ptr, tm_ptr, dqa_ptr, dkt_ptr, dw_ptr, datt_ptr, dtm_ptr, dbp_ptr, dgl_ptr,
    dq_ptr, dk_ptr, dbeta_ptr, dg_ptr, scale,
    T, Tp, NT,
    H: tl.constexpr, DK: tl.constexpr, C: tl.constexpr, BK: tl.constexpr,
    USE_G: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Per chunk, the key-dimension part: dq, dk, dβ, dg through the attention, W = T X and the UT solve."""
    n, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    r = tl.arange(0, C)
    t = n * C + r
    ck = tl.arange(0, BK)
    kmask = ck < DK
    q = load_rows(q_ptr, b, h, t, T, H, DK, ck) * scale
    k = load_rows(k_ptr, b, h, t, T, H, DK, ck)
    beta = load_scalars(beta_ptr, b, h, t, T, H)
    coff = (bh * Tp + t[:, None]) * C + r[None, :]
    koff = (bh * Tp + t[:, None]) * DK + ck[None, :]
    tmT = tl.trans(tl.load(tm_ptr + coff))
    datt = tl.load(datt_ptr + coff)
    dq_acc = tl.load(dqa_ptr + koff, mask=kmask[None, :], other=0.0)
    dkt = tl.load(dkt_ptr + koff, mask=kmask[None, :], other=0.0)
    dbeta = tl.load(dbp_ptr + bh * Tp + t)
    causal = r[:, None] >= r[None, :]
    strict = r[:, None] > r[None, :]
    if USE_G:
        G = tl.load(gc_ptr + bh * Tp + t)
        g_last = tl.load(gc_ptr + bh * Tp + n * C + C - 1)
        eg = tl.exp(G)
        egl = tl.exp(g_last - G)
        gam = gamma(G, r)
        dp = tl.where(causal, datt, 0.0) * gam
        dq = dq_acc * eg[:, None] + mm(dp, k, PREC)
        dk = mm(tl.trans(dp), q, PREC) + dkt * egl[:, None]
        e = dp * mm(q, tl.trans(k), PREC)
        f = tl.sum(dkt * k * egl[:, None], 1)
        dG = tl.sum(dq_acc * q * eg[:, None], 1) + tl.sum(e, 1) - tl.sum(e, 0) - f
        dgl = tl.load(dgl_ptr + bh * NT + n) * tl.exp(g_last) + tl.sum(f, 0)
        x = k * (beta * eg)[:, None]
    else:
        gam = tl.where(causal, 1.0, 0.0)
        dp = tl.where(causal, datt, 0.0)
        dq = dq_acc + mm(dp, k, PREC)
        dk = mm(tl.trans(dp), q, PREC) + dkt
        x = k * beta[:, None]
    store_rows(dq_ptr, dq * scale, b, h, t, T, H, DK, ck)
    dw = tl.load(dw_ptr + koff, mask=kmask[None, :], other=0.0)
    # through W = T X
    dtm = tl.load(dtm_ptr + coff) + mm(dw, tl.trans(x), PREC)
    dx = mm(tmT, dw, PREC)
    # through T = (I + A)⁻¹: dA = −Tᵀ dT Tᵀ, strictly lower; A = diag(β) (K Kᵀ ⊙ Γ)
    da = -mm(mm(tmT, dtm, PREC), tmT, PREC)
    da = tl.where(strict, da, 0.0)
    kkt = mm(k, tl.trans(k), PREC)
    dbk = da * beta[:, None] * gam
    dk += mm(dbk + tl.trans(dbk), k, PREC)
    dbeta += tl.sum(da * kkt * gam, 1)
    if USE_G:
        dk += dx * (beta * eg)[:, None]
        dbeta += tl.sum(dx * k * eg[:, None], 1)
        e2 = da * beta[:, None] * kkt * gam
        dG += tl.sum(dx * x, 1) + tl.sum(e2, 1) - tl.sum(e2, 0)
        dG += tl.where(r == C - 1, dgl, 0.0)
        dg = tl.sum(tl.where(causal, dG[:, None], 0.0), 0)  # dg_j = Σ_{i ≥ j} dG_i
        tl.store(dg_ptr + (b * T + t) * H + h, dg.to(dg_ptr.dtype.element_ty), mask=t < T)
    else:
        dk += dx * beta[:, None]
        dbeta += tl.sum(dx * k, 1)
    store_rows(dk_ptr, dk, b, h, t, T, H, DK, ck)
    tl.store(dbeta_ptr + (b * T + t) * H + h, dbeta.to(dbeta_ptr.dtype.element_ty), mask=t < T)


def chunk_grads(q: Tensor, k: Tensor, v: Tensor, g: Tensor | None, beta: Tensor, scale: float, saved: tuple,
                states: tuple, do: Tensor, m: dict) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor]:  # fmt: skip
    """(dq, dk, dv, dg or None, dβ) in the inputs' dtypes; ``saved`` = (W, U, T, G), ``states`` = (S_n, dS_{n+1},
    Vn, dVn) from :mod:`deltanet.ops.kernels.chunk_state`."""
    B, H, NT, Tp, DK, DV, C = m["B"], m["H"], m["NT"], m["Tp"], m["DK"], m["DV"], m["C"]
    _, _, tm, gc = saved
    h, dh, vn, dvn = states
    use_g = gc is not None
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dbeta = torch.empty_like(beta)
    dg = torch.empty_like(g) if use_g else None
    # fp32 partials handed from the value-loop kernel to the key-dimension kernel (split to bound shared memory)
    dqa, dkt, dw = (q.new_empty(B * H, Tp, DK, dtype=torch.float32) for _ in range(3))
    datt, dtm = (q.new_empty(B * H, Tp, C, dtype=torch.float32) for _ in range(2))
    dbp = q.new_empty(B * H, Tp, dtype=torch.float32)
    dgl = q.new_empty(B * H, NT, dtype=torch.float32)
    bwd_vloop_kernel[(NT, B * H)](
        q, k, v, beta, tm, h, dh, vn, dvn, do, dv, dqa, dkt, dw, datt, dtm, dbp, dgl, m["T"], Tp, NT,
        H=H, DK=DK, DV=DV, C=C, BK=m["BK"], BV=m["BV_m"], NV=m["NV_m"], USE_G=use_g, PREC=m["PREC"], num_warps=m["W"],
        num_stages=2,
    )  # fmt: skip
    # without a gate, gc_ptr and dg_ptr are never touched (USE_G=False): any tensor stands in for them
    bwd_post_kernel[(NT, B * H)](
        q, k, beta, gc if use_g else dbp, tm, dqa, dkt, dw, datt, dtm, dbp, dgl, dq, dk, dbeta,
        dg if use_g else dbeta, scale, m["T"], Tp, NT,
        H=H, DK=DK, C=C, BK=m["BK"], USE_G=use_g, PREC=m["PREC"], num_warps=m["W"], num_stages=1,
    )  # fmt: skip
    return dq, dk, dv, dg, dbeta
