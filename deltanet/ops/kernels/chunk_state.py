"""The sequential stages over chunks: the forward state recurrence (S_n, Vn, final state) and its reverse (dS_n)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from deltanet.ops.kernels.primitives import gamma, load_rows, mm


@triton.jit
def fwd_h_kernel(
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
        vn = u - mm(w, S, PREC)
        tl.store(vn_ptr + (bh * Tp + t[:, None]) * DV + cv[None, :], vn, mask=vmask[None, :])
        if not DROP_UPDATE:
            k = load_rows(k_ptr, b, h, t, T, H, DK, ck)
            if USE_G:
                G = tl.load(gc_ptr + bh * Tp + t)
                g_last = tl.load(gc_ptr + bh * Tp + n * C + C - 1)
                k = k * tl.exp(g_last - G)[:, None]
                S = S * tl.exp(g_last)
            S += mm(tl.trans(k), vn, PREC)
    tl.store(ht_ptr + bh * DK * DV + soff, S, mask=smask)


@triton.jit
def bwd_dh_kernel(
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
        q = load_rows(q_ptr, b, h, t, T, H, DK, ck) * scale
        k = load_rows(k_ptr, b, h, t, T, H, DK, ck)
        w = tl.load(w_ptr + (bh * Tp + t[:, None]) * DK + ck[None, :], mask=kmask[None, :], other=0.0)
        do = load_rows(do_ptr, b, h, t, T, H, DV, cv)
        qk = mm(q, tl.trans(k), PREC)
        if USE_G:
            G = tl.load(gc_ptr + bh * Tp + t)
            g_last = tl.load(gc_ptr + bh * Tp + n * C + C - 1)
            p = qk * gamma(G, r)
            k = k * tl.exp(g_last - G)[:, None]
            q = q * tl.exp(G)[:, None]
        else:
            p = tl.where(r[:, None] >= r[None, :], qk, 0.0)
        dvn = mm(tl.trans(p), do, PREC) + mm(k, dS, PREC)
        tl.store(dvn_ptr + (bh * Tp + t[:, None]) * DV + cv[None, :], dvn, mask=vmask[None, :])
        if USE_G:
            dS = dS * tl.exp(g_last)
        dS += mm(tl.trans(q), do, PREC) - mm(tl.trans(w), dvn, PREC)
    tl.store(dh0_ptr + bh * DK * DV + soff, dS, mask=smask)


def state_forward(k: Tensor, w: Tensor, u: Tensor, gc: Tensor | None, h0: Tensor | None, m: dict,
                  drop_update: bool = False) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """(S_n per chunk ``[B·H, NT, Dk, Dv]``, Vn ``[B·H, Tp, Dv]``, final state ``[B, H, Dk, Dv]``), all fp32.

    ``drop_update`` (test-only fault): skip the state update, so that verify-kernels can show it catches it."""
    B, H, NT, Tp, DK, DV = m["B"], m["H"], m["NT"], m["Tp"], m["DK"], m["DV"]
    h = k.new_empty(B * H, NT, DK, DV, dtype=torch.float32)
    vn = k.new_empty(B * H, Tp, DV, dtype=torch.float32)
    ht = k.new_empty(B, H, DK, DV, dtype=torch.float32)
    # pointers behind a false flag (USE_G, HAS_H0) are never read: any tensor stands in for them
    fwd_h_kernel[(m["NV_h"], B * H)](
        k, w, u, gc, h0 if h0 is not None else ht, h, vn, ht, m["T"], Tp, NT,
        H=H, DK=DK, DV=DV, C=m["C"], BK=m["BK"], BV=m["BV_h"], USE_G=gc is not None, HAS_H0=h0 is not None,
        DROP_UPDATE=drop_update, PREC=m["PREC"], num_warps=m["W"], num_stages=m["S_h"],
    )  # fmt: skip
    return h, vn, ht


def state_backward(q: Tensor, k: Tensor, w: Tensor, gc: Tensor | None, do: Tensor, dht: Tensor | None, scale: float,
                   m: dict) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """(dS_{n+1} per chunk ``[B·H, NT, Dk, Dv]``, dVn ``[B·H, Tp, Dv]``, dS_0 ``[B, H, Dk, Dv]``), all fp32."""
    B, H, NT, Tp, DK, DV, C = m["B"], m["H"], m["NT"], m["Tp"], m["DK"], m["DV"], m["C"]
    use_g = gc is not None
    dh = q.new_empty(B * H, NT, DK, DV, dtype=torch.float32)
    dvn = q.new_empty(B * H, Tp, DV, dtype=torch.float32)
    dh0 = q.new_empty(B, H, DK, DV, dtype=torch.float32)
    bwd_dh_kernel[(m["NV_h"], B * H)](
        q, k, w, gc if use_g else w, do, dht if dht is not None else dh0, dh, dvn, dh0, scale, m["T"], Tp, NT,
        H=H, DK=DK, DV=DV, C=C, BK=m["BK"], BV=m["BV_h"], USE_G=use_g, HAS_DHT=dht is not None, PREC=m["PREC"],
        num_warps=m["W"], num_stages=m["S_h"],
    )  # fmt: skip
    return dh, dvn, dh0
