"""Triton kernels shared by the chunked delta rule and the chunked gated delta rule (forward and backward).

Written from the math of ``../shared/spec/deltanet-math.md`` §1.2 / §2.2 (the naive ops in this package are the
reference). One head, one chunk of C rows, q already scaled, G = within-chunk cumsum of g (G ≡ 0 ungated),
Γ_ij = e^{G_i − G_j} for i ≥ j (0 above), S_n = state entering chunk n::

    A   = strict_lower(diag(β) K Kᵀ ⊙ Γ)          T = (I + A)⁻¹            (UT transform)
    X   = diag(β) K ⊙ e^G    W = T X               Y = diag(β) V    U = T Y
    Vn  = U − W S_n                                  (corrected pseudo-values, "v_new")
    O   = (Q ⊙ e^G) S_n + (Q Kᵀ ⊙ Γ ⊙ M) Vn          (M: causal, diagonal kept)
    S_{n+1} = e^{G_L} S_n + (K ⊙ e^{G_L − G})ᵀ Vn     (G_L = G of the chunk's last row)

Kernels (grid in brackets; bh = batch·head, NV = value-dim blocks):

- ``_wy_fwd_kernel``   [NT, BH]:  G, A, T by forward substitution, W, U.
- ``_fwd_h_kernel``    [NV, BH]:  sequential over chunks: stores S_n and Vn, returns the final state.
- ``_fwd_o_kernel``    [NV, NT, BH]: the output.
- ``_bwd_dh_kernel``   [NV, BH]:  reverse over chunks: dS_{n+1} (stored), dVn = (QKᵀ⊙Γ⊙M)ᵀ dO + K̃ dS_{n+1},
  dS_n = e^{G_L} dS_{n+1} + (Q⊙e^G)ᵀ dO − Wᵀ dVn; returns dS_0 (the initial-state gradient).
- ``_bwd_vloop_kernel`` [NT, BH] then ``_bwd_post_kernel`` [NT, BH]: per chunk, dq, dk, dv, dβ, dg (through
  W/U = T X / T Y and the solve: dT = dW Xᵀ + dU Yᵀ, dX = Tᵀ dW, dY = Tᵀ dU, dA = −Tᵀ dT Tᵀ; dg = reverse cumsum
  of dG). The first sums over value blocks (and writes dv); the second does the key-dimension algebra. They are
  two kernels only to keep each one's shared memory under the sm_90 limit at Dk = 128.

Inputs keep the user layout ``[B, T, H, D]`` (rows past T are masked to zero, which is exactly zero padding:
k = v = β = g = 0 leaves the state alone). Intermediates are fp32, heads-first and padded to NT·C rows.
All accumulation is fp32; fp32 inputs use 3-pass tf32 dots (≈ IEEE fp32), fp16/bf16 inputs tf32 dots.

Test-only fault: ``DELTANET_KERNEL_FAULT=drop_state_update`` makes the forward state recurrence skip the
update, so ``verify`` can show that it catches a wrong kernel.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

FAULT_ENV = "DELTANET_KERNEL_FAULT"
FAULTS = ("drop_state_update",)
CHUNK_SIZES = (16, 32, 64)
MAX_HEAD_DIM = 256  # per kernel launch; wider value heads run in blocks (see chunk_rule)


def interpreting() -> bool:
    """Whether ``TRITON_INTERPRET`` is set now (triton reads it when a kernel is *decorated*, i.e. at import)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() not in ("", "0", "false", "off", "no")


# The kernels below were decorated under this setting; :func:`deltanet.ops.dispatch.enable_interpreter` reloads
# this module when the interpreter is switched on after the first import.
INTERPRETED = interpreting()


# ----------------------------------------------------------------------------------------------------------------
# small jit helpers


@triton.jit
def _mm(a, b, PREC: tl.constexpr):
    return tl.dot(a, b, input_precision=PREC)


@triton.jit
def _gamma(G, r):
    """Γ_ij = exp(G_i − G_j) on/below the diagonal, 0 above (no overflow: the exponent is masked first)."""
    causal = r[:, None] >= r[None, :]
    diff = tl.where(causal, G[:, None] - G[None, :], 0.0)
    return tl.where(causal, tl.exp(diff), 0.0)


@triton.jit
def _ut_solve(a, r, C: tl.constexpr):
    """T = (I + A)⁻¹ for strictly lower A [C, C]: row i of T = e_i − Σ_{m<i} A_im T_m (rows m < i final)."""
    tm = tl.zeros([C, C], dtype=tl.float32)
    for i in range(C):
        sel = r[:, None] == i
        a_i = tl.sum(tl.where(sel, a, 0.0), 0)  # row i of A, indexed by m
        t_i = tl.where(r == i, 1.0, 0.0) - tl.sum(a_i[:, None] * tm, 0)
        tm = tl.where(sel, t_i[None, :], tm)
    return tm


@triton.jit
def _load_rows(ptr, b, h, t, T, H: tl.constexpr, D: tl.constexpr, cols):
    """Rows t of one (b, h) from a ``[B, T, H, D]`` tensor as fp32 [C, BD]; rows ≥ T and cols ≥ D read 0."""
    mask = (t[:, None] < T) & (cols[None, :] < D)
    return tl.load(ptr + ((b * T + t[:, None]) * H + h) * D + cols[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _store_rows(ptr, x, b, h, t, T, H: tl.constexpr, D: tl.constexpr, cols):
    mask = (t[:, None] < T) & (cols[None, :] < D)
    tl.store(ptr + ((b * T + t[:, None]) * H + h) * D + cols[None, :], x.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _load_scalars(ptr, b, h, t, T, H: tl.constexpr):
    """β or g of rows t, one (b, h), fp32 [C]; rows ≥ T read 0."""
    return tl.load(ptr + (b * T + t) * H + h, mask=t < T, other=0.0).to(tl.float32)


# ----------------------------------------------------------------------------------------------------------------
# forward


@triton.jit
def _wy_fwd_kernel(
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
    k = _load_rows(k_ptr, b, h, t, T, H, DK, ck)
    beta = _load_scalars(beta_ptr, b, h, t, T, H)
    kkt = _mm(k, tl.trans(k), PREC)
    strict = r[:, None] > r[None, :]
    if USE_G:
        G = tl.cumsum(_load_scalars(g_ptr, b, h, t, T, H), 0)
        tl.store(gc_ptr + bh * Tp + t, G)
        a = tl.where(strict, beta[:, None] * kkt * _gamma(G, r), 0.0)
        x = k * (beta * tl.exp(G))[:, None]
    else:
        a = tl.where(strict, beta[:, None] * kkt, 0.0)
        x = k * beta[:, None]
    tm = _ut_solve(a, r, C)
    tl.store(tm_ptr + (bh * Tp + t[:, None]) * C + r[None, :], tm)
    w = _mm(tm, x, PREC)
    tl.store(w_ptr + (bh * Tp + t[:, None]) * DK + ck[None, :], w, mask=ck[None, :] < DK)
    for iv in range(NV):
        cv = iv * BV + tl.arange(0, BV)
        y = _load_rows(v_ptr, b, h, t, T, H, DV, cv) * beta[:, None]
        u = _mm(tm, y, PREC)
        tl.store(u_ptr + (bh * Tp + t[:, None]) * DV + cv[None, :], u, mask=cv[None, :] < DV)


@triton.jit
def _fwd_h_kernel(
    k_ptr, w_ptr, u_ptr, gc_ptr, h0_ptr, h_ptr, vn_ptr, ht_ptr,
    T, Tp, NT,
    H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_G: tl.constexpr, HAS_H0: tl.constexpr, DROP_UPDATE: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    iv, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    r = tl.arange(0, C)
    ck = tl.arange(0, BK)
    cv = iv * BV + tl.arange(0, BV)
    kmask, vmask = ck < DK, cv < DV
    smask = kmask[:, None] & vmask[None, :]
    soff = ck[:, None] * DV + cv[None, :]
    S = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_H0:
        S += tl.load(h0_ptr + bh * DK * DV + soff, mask=smask, other=0.0).to(tl.float32)
    for n in range(NT):
        t = n * C + r
        tl.store(h_ptr + (bh * NT + n) * DK * DV + soff, S, mask=smask)
        w = tl.load(w_ptr + (bh * Tp + t[:, None]) * DK + ck[None, :], mask=kmask[None, :], other=0.0)
        u = tl.load(u_ptr + (bh * Tp + t[:, None]) * DV + cv[None, :], mask=vmask[None, :], other=0.0)
        vn = u - _mm(w, S, PREC)
        tl.store(vn_ptr + (bh * Tp + t[:, None]) * DV + cv[None, :], vn, mask=vmask[None, :])
        if not DROP_UPDATE:
            k = _load_rows(k_ptr, b, h, t, T, H, DK, ck)
            if USE_G:
                G = tl.load(gc_ptr + bh * Tp + t)
                g_last = tl.load(gc_ptr + bh * Tp + n * C + C - 1)
                k = k * tl.exp(g_last - G)[:, None]
                S = S * tl.exp(g_last)
            S += _mm(tl.trans(k), vn, PREC)
    tl.store(ht_ptr + bh * DK * DV + soff, S, mask=smask)


@triton.jit
def _fwd_o_kernel(
    q_ptr, k_ptr, gc_ptr, h_ptr, vn_ptr, o_ptr, scale,
    T, Tp, NT,
    H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_G: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    iv, n, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = bh // H, bh % H
    r = tl.arange(0, C)
    t = n * C + r
    ck = tl.arange(0, BK)
    cv = iv * BV + tl.arange(0, BV)
    vmask = cv < DV
    q = _load_rows(q_ptr, b, h, t, T, H, DK, ck) * scale
    k = _load_rows(k_ptr, b, h, t, T, H, DK, ck)
    S = tl.load(h_ptr + (bh * NT + n) * DK * DV + ck[:, None] * DV + cv[None, :],
                mask=(ck[:, None] < DK) & vmask[None, :], other=0.0)  # fmt: skip
    vn = tl.load(vn_ptr + (bh * Tp + t[:, None]) * DV + cv[None, :], mask=vmask[None, :], other=0.0)
    qk = _mm(q, tl.trans(k), PREC)
    if USE_G:
        G = tl.load(gc_ptr + bh * Tp + t)
        p = qk * _gamma(G, r)
        q = q * tl.exp(G)[:, None]
    else:
        p = tl.where(r[:, None] >= r[None, :], qk, 0.0)
    o = _mm(q, S, PREC) + _mm(p, vn, PREC)
    _store_rows(o_ptr, o, b, h, t, T, H, DV, cv)


# ----------------------------------------------------------------------------------------------------------------
# backward


@triton.jit
def _bwd_dh_kernel(
    q_ptr, k_ptr, w_ptr, gc_ptr, do_ptr, dht_ptr, dh_ptr, dvn_ptr, dh0_ptr, scale,
    T, Tp, NT,
    H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_G: tl.constexpr, HAS_DHT: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    iv, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    r = tl.arange(0, C)
    ck = tl.arange(0, BK)
    cv = iv * BV + tl.arange(0, BV)
    kmask, vmask = ck < DK, cv < DV
    smask = kmask[:, None] & vmask[None, :]
    soff = ck[:, None] * DV + cv[None, :]
    dS = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_DHT:
        dS += tl.load(dht_ptr + bh * DK * DV + soff, mask=smask, other=0.0).to(tl.float32)
    for i in range(NT):
        n = NT - 1 - i
        t = n * C + r
        tl.store(dh_ptr + (bh * NT + n) * DK * DV + soff, dS, mask=smask)  # dL/dS_{n+1}
        q = _load_rows(q_ptr, b, h, t, T, H, DK, ck) * scale
        k = _load_rows(k_ptr, b, h, t, T, H, DK, ck)
        w = tl.load(w_ptr + (bh * Tp + t[:, None]) * DK + ck[None, :], mask=kmask[None, :], other=0.0)
        do = _load_rows(do_ptr, b, h, t, T, H, DV, cv)
        qk = _mm(q, tl.trans(k), PREC)
        if USE_G:
            G = tl.load(gc_ptr + bh * Tp + t)
            g_last = tl.load(gc_ptr + bh * Tp + n * C + C - 1)
            p = qk * _gamma(G, r)
            k = k * tl.exp(g_last - G)[:, None]
            q = q * tl.exp(G)[:, None]
        else:
            p = tl.where(r[:, None] >= r[None, :], qk, 0.0)
        dvn = _mm(tl.trans(p), do, PREC) + _mm(k, dS, PREC)
        tl.store(dvn_ptr + (bh * Tp + t[:, None]) * DV + cv[None, :], dvn, mask=vmask[None, :])
        if USE_G:
            dS = dS * tl.exp(g_last)
        dS += _mm(tl.trans(q), do, PREC) - _mm(tl.trans(w), dvn, PREC)
    tl.store(dh0_ptr + bh * DK * DV + soff, dS, mask=smask)


@triton.jit
def _bwd_vloop_kernel(
    q_ptr, k_ptr, v_ptr, beta_ptr, tm_ptr, h_ptr, dh_ptr, vn_ptr, dvn_ptr, do_ptr,
    dv_ptr, dqa_ptr, dkt_ptr, dw_ptr, datt_ptr, dtm_ptr, dbp_ptr, dgl_ptr,
    T, Tp, NT,
    H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    NV: tl.constexpr, USE_G: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Per chunk, the sums over the value dimension; writes dv and fp32 partials for :func:`_bwd_post_kernel`."""
    n, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    r = tl.arange(0, C)
    t = n * C + r
    ck = tl.arange(0, BK)
    kmask = ck < DK
    beta = _load_scalars(beta_ptr, b, h, t, T, H)
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
        do = _load_rows(do_ptr, b, h, t, T, H, DV, cv)
        v = _load_rows(v_ptr, b, h, t, T, H, DV, cv)
        dq_acc += _mm(do, tl.trans(S), PREC)
        datt += _mm(do, tl.trans(vn), PREC)
        dkt += _mm(vn, tl.trans(dS), PREC)
        dw -= _mm(dvn, tl.trans(S), PREC)
        dtm += _mm(dvn, tl.trans(v * beta[:, None]), PREC)
        dy = _mm(tmT, dvn, PREC)
        _store_rows(dv_ptr, dy * beta[:, None], b, h, t, T, H, DV, cv)
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
def _bwd_post_kernel(
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
    q = _load_rows(q_ptr, b, h, t, T, H, DK, ck) * scale
    k = _load_rows(k_ptr, b, h, t, T, H, DK, ck)
    beta = _load_scalars(beta_ptr, b, h, t, T, H)
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
        gam = _gamma(G, r)
        dp = tl.where(causal, datt, 0.0) * gam
        dq = dq_acc * eg[:, None] + _mm(dp, k, PREC)
        dk = _mm(tl.trans(dp), q, PREC) + dkt * egl[:, None]
        e = dp * _mm(q, tl.trans(k), PREC)
        f = tl.sum(dkt * k * egl[:, None], 1)
        dG = tl.sum(dq_acc * q * eg[:, None], 1) + tl.sum(e, 1) - tl.sum(e, 0) - f
        dgl = tl.load(dgl_ptr + bh * NT + n) * tl.exp(g_last) + tl.sum(f, 0)
        x = k * (beta * eg)[:, None]
    else:
        gam = tl.where(causal, 1.0, 0.0)
        dp = tl.where(causal, datt, 0.0)
        dq = dq_acc + _mm(dp, k, PREC)
        dk = _mm(tl.trans(dp), q, PREC) + dkt
        x = k * beta[:, None]
    _store_rows(dq_ptr, dq * scale, b, h, t, T, H, DK, ck)
    dw = tl.load(dw_ptr + koff, mask=kmask[None, :], other=0.0)
    # through W = T X
    dtm = tl.load(dtm_ptr + coff) + _mm(dw, tl.trans(x), PREC)
    dx = _mm(tmT, dw, PREC)
    # through T = (I + A)⁻¹: dA = −Tᵀ dT Tᵀ, strictly lower; A = diag(β) (K Kᵀ ⊙ Γ)
    da = -_mm(_mm(tmT, dtm, PREC), tmT, PREC)
    da = tl.where(strict, da, 0.0)
    kkt = _mm(k, tl.trans(k), PREC)
    dbk = da * beta[:, None] * gam
    dk += _mm(dbk + tl.trans(dbk), k, PREC)
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
    _store_rows(dk_ptr, dk, b, h, t, T, H, DK, ck)
    tl.store(dbeta_ptr + (b * T + t) * H + h, dbeta.to(dbeta_ptr.dtype.element_ty), mask=t < T)


# ----------------------------------------------------------------------------------------------------------------
# host side


def _fault() -> str | None:
    fault = os.environ.get(FAULT_ENV) or None
    if fault is not None and fault not in FAULTS:
        raise ValueError(f"{FAULT_ENV}={fault!r} is not a known test fault; known: {FAULTS}")
    return fault


def launch_config(DK: int, DV: int, C: int, dtype: torch.dtype, interpreted: bool) -> dict:
    """Block sizes, warps and stages per kernel family.

    Interpreter: one value block everywhere (fewer program instances). GPU: sized so that every kernel's shared
    memory stays under the H100/H200 limit (227 KiB) for Dk ≤ 128 — checked without a GPU by compiling for sm_90
    (``python benchmarks/kernels.py --aot-check``) — with smaller value blocks for larger key dims:
    ``h`` = the sequential state kernels (fwd_h, bwd_dh; pipelining limited to 2 stages), ``o`` = wy/fwd_o,
    ``m`` = the per-chunk backward. fp32 inputs use 3-pass tf32 dots (≈ fp32 accuracy on tensor cores), fp16/bf16
    inputs tf32 dots; accumulation is fp32 throughout.
    """
    BK = max(16, triton.next_power_of_2(DK))
    BVfull = max(16, triton.next_power_of_2(DV))
    if interpreted:
        bv_h = bv_o = bv_m = BVfull
    else:
        bv_h = min(BVfull, 64 if BK <= 64 else 32)
        bv_o = min(BVfull, 64)
        bv_m = min(BVfull, 64 if BK <= 32 else 32 if BK <= 64 else 16)
    cfg = dict(BK=BK, PREC="tf32x3" if dtype == torch.float32 else "tf32", W=4 if BK * C <= 1024 else 8,
               S_h=1 if BK * C >= 128 * 64 else 2)  # fmt: skip  # pipelining stages of the sequential kernels
    for name, bv in (("h", bv_h), ("o", bv_o), ("m", bv_m)):
        cfg[f"BV_{name}"], cfg[f"NV_{name}"] = bv, triton.cdiv(DV, bv)
    return cfg


def _meta(q: Tensor, v: Tensor, chunk_size: int) -> dict:
    B, T, H, DK = q.shape
    DV = v.shape[-1]
    NT = triton.cdiv(T, chunk_size)
    cfg = launch_config(DK, DV, chunk_size, q.dtype, INTERPRETED)
    return dict(B=B, T=T, H=H, DK=DK, DV=DV, C=chunk_size, NT=NT, Tp=NT * chunk_size, **cfg)


def _forward_h(k, w, u, gc, h0, m, drop_update=False):
    B, H, NT, Tp, DK, DV = m["B"], m["H"], m["NT"], m["Tp"], m["DK"], m["DV"]
    h = k.new_empty(B * H, NT, DK, DV, dtype=torch.float32)
    vn = k.new_empty(B * H, Tp, DV, dtype=torch.float32)
    ht = k.new_empty(B, H, DK, DV, dtype=torch.float32)
    _fwd_h_kernel[(m["NV_h"], B * H)](
        k, w, u, gc, h0 if h0 is not None else ht, h, vn, ht, m["T"], Tp, NT,
        H=H, DK=DK, DV=DV, C=m["C"], BK=m["BK"], BV=m["BV_h"], USE_G=gc is not None, HAS_H0=h0 is not None,
        DROP_UPDATE=drop_update, PREC=m["PREC"], num_warps=m["W"], num_stages=m["S_h"],
    )  # fmt: skip
    return h, vn, ht


def chunk_forward(q, k, v, g, beta, scale, h0, chunk_size, drop_update=False):
    """Forward pass; returns (o, final_state, saved) with ``saved`` = the intermediates the backward reuses."""
    m = _meta(q, v, chunk_size)
    B, H, Tp, DK, DV, C = m["B"], m["H"], m["Tp"], m["DK"], m["DV"], m["C"]
    use_g = g is not None
    w = q.new_empty(B * H, Tp, DK, dtype=torch.float32)
    u = q.new_empty(B * H, Tp, DV, dtype=torch.float32)
    tm = q.new_empty(B * H, Tp, C, dtype=torch.float32)
    gc = q.new_empty(B * H, Tp, dtype=torch.float32) if use_g else None
    _wy_fwd_kernel[(m["NT"], B * H)](
        k, v, beta, g if use_g else beta, w, u, tm, gc if use_g else w, m["T"], Tp,
        H=H, DK=DK, DV=DV, C=C, BK=m["BK"], BV=m["BV_o"], NV=m["NV_o"], USE_G=use_g, PREC=m["PREC"], num_warps=m["W"],
    )  # fmt: skip
    h, vn, ht = _forward_h(k, w, u, gc, h0, m, drop_update)
    o = torch.empty(v.shape, dtype=q.dtype, device=v.device)  # the naive op returns o in q.dtype
    _fwd_o_kernel[(m["NV_o"], m["NT"], B * H)](
        q, k, gc if use_g else w, h, vn, o, scale, m["T"], Tp, m["NT"],
        H=H, DK=DK, DV=DV, C=C, BK=m["BK"], BV=m["BV_o"], USE_G=use_g, PREC=m["PREC"], num_warps=m["W"],
    )  # fmt: skip
    return o, ht, (w, u, tm, gc)


def chunk_backward(q, k, v, g, beta, scale, h0, chunk_size, saved, do, dht):
    """Backward pass; returns (dq, dk, dv, dg or None, dbeta, dh0 fp32)."""
    m = _meta(q, v, chunk_size)
    B, H, NT, Tp, DK, DV, C = m["B"], m["H"], m["NT"], m["Tp"], m["DK"], m["DV"], m["C"]
    w, u, tm, gc = saved
    use_g = gc is not None
    h, vn, _ = _forward_h(k, w, u, gc, h0, m)  # recompute the per-chunk states instead of keeping them
    do = do.contiguous()
    dh = torch.empty_like(h)
    dvn = torch.empty_like(vn)
    dh0 = q.new_empty(B, H, DK, DV, dtype=torch.float32)
    _bwd_dh_kernel[(m["NV_h"], B * H)](
        q, k, w, gc if use_g else w, do, dht if dht is not None else dh0, dh, dvn, dh0, scale, m["T"], Tp, NT,
        H=H, DK=DK, DV=DV, C=C, BK=m["BK"], BV=m["BV_h"], USE_G=use_g, HAS_DHT=dht is not None, PREC=m["PREC"],
        num_warps=m["W"], num_stages=m["S_h"],
    )  # fmt: skip
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dbeta = torch.empty_like(beta)
    dg = torch.empty_like(g) if use_g else None
    # fp32 partials handed from the value-loop kernel to the key-dimension kernel (split to bound shared memory)
    dqa, dkt, dw = (q.new_empty(B * H, Tp, DK, dtype=torch.float32) for _ in range(3))
    datt, dtm = (q.new_empty(B * H, Tp, C, dtype=torch.float32) for _ in range(2))
    dbp = q.new_empty(B * H, Tp, dtype=torch.float32)
    dgl = q.new_empty(B * H, NT, dtype=torch.float32)
    _bwd_vloop_kernel[(NT, B * H)](
        q, k, v, beta, tm, h, dh, vn, dvn, do, dv, dqa, dkt, dw, datt, dtm, dbp, dgl, m["T"], Tp, NT,
        H=H, DK=DK, DV=DV, C=C, BK=m["BK"], BV=m["BV_m"], NV=m["NV_m"], USE_G=use_g, PREC=m["PREC"], num_warps=m["W"],
        num_stages=2,
    )  # fmt: skip
    _bwd_post_kernel[(NT, B * H)](
        q, k, beta, gc if use_g else dbp, tm, dqa, dkt, dw, datt, dtm, dbp, dgl, dq, dk, dbeta,
        dg if use_g else dbeta, scale, m["T"], Tp, NT,
        H=H, DK=DK, C=C, BK=m["BK"], USE_G=use_g, PREC=m["PREC"], num_warps=m["W"], num_stages=1,
    )  # fmt: skip
    return dq, dk, dv, dg, dbeta, dh0


class ChunkDeltaRuleFunction(torch.autograd.Function):
    """Autograd wrapper over the forward/backward kernels; ``g is None`` = the ungated delta rule."""

    @staticmethod
    def forward(ctx, q, k, v, g, beta, scale, initial_state, chunk_size, drop_update):
        q, k, v, beta = (x.contiguous() for x in (q, k, v, beta))
        g = g.contiguous() if g is not None else None
        h0 = initial_state.contiguous() if initial_state is not None else None
        o, ht, saved = chunk_forward(q, k, v, g, beta, scale, h0, chunk_size, drop_update)
        ctx.save_for_backward(q, k, v, g, beta, h0, *saved)
        ctx.scale, ctx.chunk_size, ctx.h0_dtype = scale, chunk_size, None if h0 is None else h0.dtype
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, g, beta, h0, *saved = ctx.saved_tensors
        dht = dht.contiguous() if dht is not None else None
        dq, dk, dv, dg, dbeta, dh0 = chunk_backward(q, k, v, g, beta, ctx.scale, h0, ctx.chunk_size, saved, do, dht)
        dh0 = dh0.to(ctx.h0_dtype) if ctx.h0_dtype is not None else None
        return dq, dk, dv, dg, dbeta, None, dh0, None, None


def chunk_rule(q, k, v, g, beta, chunk_size, scale, initial_state) -> tuple[Tensor, Tensor]:
    """Checked entry point shared by ``chunk_delta_rule`` (g=None) and ``chunk_gated_delta_rule``."""
    from deltanet.ops.chunkwise import check_inputs

    B, T, H, DK, DV = check_inputs(q, k, v, beta, g=g, initial_state=initial_state)
    if chunk_size not in CHUNK_SIZES:
        raise ValueError(f"chunk_size must be one of {CHUNK_SIZES} for the Triton kernels, got {chunk_size!r}")
    if DK > MAX_HEAD_DIM:
        raise ValueError(f"key head dims above {MAX_HEAD_DIM} are not supported by the Triton kernels (Dk={DK})")
    if q.device.type != "cuda" and not INTERPRETED:
        raise RuntimeError(
            "the Triton kernels need a CUDA device; on CPU set TRITON_INTERPRET=1 before deltanet.ops.common_kernels "
            "is imported, or call deltanet.ops.dispatch.enable_interpreter() (slow, for tests), "
            "or use the naive op (kernels: naive)"
        )
    if q.dtype == torch.bfloat16 and INTERPRETED:
        raise RuntimeError("bf16 is broken in the Triton interpreter (spec §5.4); use fp32/fp16 on CPU")
    scale = DK**-0.5 if scale is None else float(scale)
    if DV > MAX_HEAD_DIM:
        # value columns are independent (column j of S and o depends on column j of v only), so wide value heads
        # (fla's Gated DeltaNet: 512) run as blocks of MAX_HEAD_DIM; autograd sums the blocks' dq, dk, dβ, dg
        blocks = torch.arange(DV, device=v.device).split(MAX_HEAD_DIM)
        parts = [chunk_rule(q, k, v[..., cols], g, beta, chunk_size, scale,
                            None if initial_state is None else initial_state[..., cols]) for cols in blocks]  # fmt: skip
        return torch.cat([o for o, _ in parts], dim=-1), torch.cat([s for _, s in parts], dim=-1)
    drop = _fault() == "drop_state_update"
    return ChunkDeltaRuleFunction.apply(q, k, v, g, beta, scale, initial_state, chunk_size, drop)
