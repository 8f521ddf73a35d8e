"""The sequential stages over chunks: the forward state recurrence (S_n, Vn, final state) and its reverse (dS_n).

Each program carries the state of one value block, [Dk, BV] fp32, across the chunks in registers, as up to four
tiles of BK key rows (``s0`` … ``s3``: Triton has no arrays of tiles; fla's ``fla/ops/common/chunk_delta_h.py``
keeps its state the same way, in 64-row tiles ``b_h1`` … ``b_h4``). Every product then reads one [C, BK] tile of
W, K or Q at a time, which keeps a 256-wide key head free of register spills.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from deltanet.ops.kernels.launch import LENGTH_ARGS
from deltanet.ops.kernels.primitives import load_rows, load_state, load_tile, mm, store_state, store_tile


@triton.jit
def _initial(ptr, kb: tl.constexpr, v0, BK: tl.constexpr, BV: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
             HAS: tl.constexpr):  # fmt: skip
    """Key tile kb of the state at ptr as fp32 (zeros when not HAS)."""
    s = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS:
        s += load_state(ptr, kb * BK, v0, BK, BV, DK, DV)
    return s


@triton.jit
def _fwd_read(s, k0, hn_ptr, w_ptr, row0, v0, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, DK: tl.constexpr,
              DV: tl.constexpr, PREC: tl.constexpr):  # fmt: skip
    """Stores the key tile of S_n at row k0; returns its term of W S_n."""
    store_state(hn_ptr, s, k0, v0, BK, BV, DK, DV)
    return mm(load_tile(w_ptr, row0, k0, C, BK, DK), s, PREC)


@triton.jit
def _fwd_write(s, k0, k_ptr, b, h, t0, T, H: tl.constexpr, C: tl.constexpr, BK: tl.constexpr, DK: tl.constexpr,
               kdecay, sdecay, vn, PREC: tl.constexpr):  # fmt: skip
    """The key tile at row k0 of S_{n+1} = e^{G_L} S_n + (K ⊙ e^{G_L − G})ᵀ Vn."""
    k = load_rows(k_ptr, b, h, t0, T, H, DK, k0, C, BK) * kdecay[:, None]
    return s * sdecay + mm(tl.trans(k), vn, PREC)


@triton.jit(do_not_specialize=LENGTH_ARGS)
def fwd_h_kernel(
    k_ptr, w_ptr, u_ptr, gc_ptr, h0_ptr, h_ptr, vn_ptr, ht_ptr,
    T, Tp, NT,
    H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr, C: tl.constexpr, BK: tl.constexpr, NK: tl.constexpr,
    BV: tl.constexpr, USE_G: tl.constexpr, HAS_H0: tl.constexpr, DROP_UPDATE: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    iv, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    v0 = iv * BV
    s0 = _initial(h0_ptr + bh * DK * DV, 0, v0, BK, BV, DK, DV, HAS_H0)
    if NK > 1:
        s1 = _initial(h0_ptr + bh * DK * DV, 1, v0, BK, BV, DK, DV, HAS_H0)
    if NK > 2:
        s2 = _initial(h0_ptr + bh * DK * DV, 2, v0, BK, BV, DK, DV, HAS_H0)
    if NK > 3:
        s3 = _initial(h0_ptr + bh * DK * DV, 3, v0, BK, BV, DK, DV, HAS_H0)
    for n in range(NT):
        t0 = n * C
        row0 = bh * Tp + t0
        hn = h_ptr + (bh * NT + n) * DK * DV
        ws = _fwd_read(s0, 0, hn, w_ptr, row0, v0, C, BK, BV, DK, DV, PREC)
        if NK > 1:
            ws += _fwd_read(s1, BK, hn, w_ptr, row0, v0, C, BK, BV, DK, DV, PREC)
        if NK > 2:
            ws += _fwd_read(s2, 2 * BK, hn, w_ptr, row0, v0, C, BK, BV, DK, DV, PREC)
        if NK > 3:
            ws += _fwd_read(s3, 3 * BK, hn, w_ptr, row0, v0, C, BK, BV, DK, DV, PREC)
        vn = load_tile(u_ptr, row0, v0, C, BV, DV) - ws
        store_tile(vn_ptr, vn, row0, v0, C, BV, DV)
        if not DROP_UPDATE:
            kdecay = tl.full([C], 1.0, tl.float32)
            sdecay = 1.0
            if USE_G:
                G = tl.load(gc_ptr + row0 + tl.arange(0, C))
                g_last = tl.load(gc_ptr + row0 + C - 1)
                kdecay = tl.exp(g_last - G)
                sdecay = tl.exp(g_last)
            s0 = _fwd_write(s0, 0, k_ptr, b, h, t0, T, H, C, BK, DK, kdecay, sdecay, vn, PREC)
            if NK > 1:
                s1 = _fwd_write(s1, BK, k_ptr, b, h, t0, T, H, C, BK, DK, kdecay, sdecay, vn, PREC)
            if NK > 2:
                s2 = _fwd_write(s2, 2 * BK, k_ptr, b, h, t0, T, H, C, BK, DK, kdecay, sdecay, vn, PREC)
            if NK > 3:
                s3 = _fwd_write(s3, 3 * BK, k_ptr, b, h, t0, T, H, C, BK, DK, kdecay, sdecay, vn, PREC)
    store_state(ht_ptr + bh * DK * DV, s0, 0, v0, BK, BV, DK, DV)
    if NK > 1:
        store_state(ht_ptr + bh * DK * DV, s1, BK, v0, BK, BV, DK, DV)
    if NK > 2:
        store_state(ht_ptr + bh * DK * DV, s2, 2 * BK, v0, BK, BV, DK, DV)
    if NK > 3:
        store_state(ht_ptr + bh * DK * DV, s3, 3 * BK, v0, BK, BV, DK, DV)


@triton.jit
def _bwd_read(ds, k0, dhn_ptr, k_ptr, b, h, t0, T, v0, H: tl.constexpr, C: tl.constexpr, BK: tl.constexpr,
              BV: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr, kdecay, PREC: tl.constexpr):  # fmt: skip
    """Stores the key tile of dS_{n+1} at row k0; returns its term of (K ⊙ e^{G_L − G}) dS_{n+1}."""
    store_state(dhn_ptr, ds, k0, v0, BK, BV, DK, DV)
    k = load_rows(k_ptr, b, h, t0, T, H, DK, k0, C, BK) * kdecay[:, None]
    return mm(k, ds, PREC)


@triton.jit
def _bwd_write(ds, k0, q_ptr, w_ptr, b, h, t0, row0, T, H: tl.constexpr, C: tl.constexpr, BK: tl.constexpr,
               DK: tl.constexpr, qdecay, sdecay, do, dvn, PREC: tl.constexpr):  # fmt: skip
    """The key tile at row k0 of dS_n = e^{G_L} dS_{n+1} + (Q ⊙ e^G)ᵀ dO − Wᵀ dVn (qdecay carries the scale)."""
    q = load_rows(q_ptr, b, h, t0, T, H, DK, k0, C, BK) * qdecay[:, None]
    w = load_tile(w_ptr, row0, k0, C, BK, DK)
    return ds * sdecay + mm(tl.trans(q), do, PREC) + mm(tl.trans(-w), dvn, PREC)  # a sum: both dots accumulate


@triton.jit(do_not_specialize=LENGTH_ARGS)
def bwd_dh_kernel(
    q_ptr, k_ptr, w_ptr, p_ptr, gc_ptr, do_ptr, dht_ptr, dh_ptr, dvn_ptr, dh0_ptr, scale,
    T, Tp, NT,
    H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr, C: tl.constexpr, BK: tl.constexpr, NK: tl.constexpr,
    BV: tl.constexpr, USE_G: tl.constexpr, HAS_DHT: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    iv, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    r = tl.arange(0, C)
    v0 = iv * BV
    ds0 = _initial(dht_ptr + bh * DK * DV, 0, v0, BK, BV, DK, DV, HAS_DHT)
    if NK > 1:
        ds1 = _initial(dht_ptr + bh * DK * DV, 1, v0, BK, BV, DK, DV, HAS_DHT)
    if NK > 2:
        ds2 = _initial(dht_ptr + bh * DK * DV, 2, v0, BK, BV, DK, DV, HAS_DHT)
    if NK > 3:
        ds3 = _initial(dht_ptr + bh * DK * DV, 3, v0, BK, BV, DK, DV, HAS_DHT)
    for i in range(NT):
        n = NT - 1 - i
        t0 = n * C
        row0 = bh * Tp + t0
        kdecay = tl.full([C], 1.0, tl.float32)
        qdecay = tl.full([C], 1.0, tl.float32) * scale
        sdecay = 1.0
        if USE_G:
            G = tl.load(gc_ptr + row0 + r)
            g_last = tl.load(gc_ptr + row0 + C - 1)
            kdecay = tl.exp(g_last - G)
            qdecay = tl.exp(G) * scale
            sdecay = tl.exp(g_last)
        do = load_rows(do_ptr, b, h, t0, T, H, DV, v0, C, BV)
        # dVn = Pᵀ dO + (K ⊙ e^{G_L − G}) dS_{n+1}, P = (Q Kᵀ ⊙ Γ ⊙ M)·scale from the WY stage
        dvn = mm(tl.trans(load_tile(p_ptr, row0, 0, C, C, C)), do, PREC)
        dhn = dh_ptr + (bh * NT + n) * DK * DV  # dL/dS_{n+1}
        dvn += _bwd_read(ds0, 0, dhn, k_ptr, b, h, t0, T, v0, H, C, BK, BV, DK, DV, kdecay, PREC)
        if NK > 1:
            dvn += _bwd_read(ds1, BK, dhn, k_ptr, b, h, t0, T, v0, H, C, BK, BV, DK, DV, kdecay, PREC)
        if NK > 2:
            dvn += _bwd_read(ds2, 2 * BK, dhn, k_ptr, b, h, t0, T, v0, H, C, BK, BV, DK, DV, kdecay, PREC)
        if NK > 3:
            dvn += _bwd_read(ds3, 3 * BK, dhn, k_ptr, b, h, t0, T, v0, H, C, BK, BV, DK, DV, kdecay, PREC)
        store_tile(dvn_ptr, dvn, row0, v0, C, BV, DV)
        ds0 = _bwd_write(ds0, 0, q_ptr, w_ptr, b, h, t0, row0, T, H, C, BK, DK, qdecay, sdecay, do, dvn, PREC)
        if NK > 1:
            ds1 = _bwd_write(ds1, BK, q_ptr, w_ptr, b, h, t0, row0, T, H, C, BK, DK, qdecay, sdecay, do, dvn, PREC)
        if NK > 2:
            ds2 = _bwd_write(ds2, 2 * BK, q_ptr, w_ptr, b, h, t0, row0, T, H, C, BK, DK, qdecay, sdecay, do, dvn, PREC)
        if NK > 3:
            ds3 = _bwd_write(ds3, 3 * BK, q_ptr, w_ptr, b, h, t0, row0, T, H, C, BK, DK, qdecay, sdecay, do, dvn, PREC)
    store_state(dh0_ptr + bh * DK * DV, ds0, 0, v0, BK, BV, DK, DV)
    if NK > 1:
        store_state(dh0_ptr + bh * DK * DV, ds1, BK, v0, BK, BV, DK, DV)
    if NK > 2:
        store_state(dh0_ptr + bh * DK * DV, ds2, 2 * BK, v0, BK, BV, DK, DV)
    if NK > 3:
        store_state(dh0_ptr + bh * DK * DV, ds3, 3 * BK, v0, BK, BV, DK, DV)


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
        H=H, DK=DK, DV=DV, C=m["C"], BK=m["BK"], NK=m["NK"], BV=m["BV_h"], USE_G=gc is not None,
        HAS_H0=h0 is not None, DROP_UPDATE=drop_update, PREC=m["PREC"], num_warps=m["W"], num_stages=m["S_h"],
    )  # fmt: skip
    return h, vn, ht


def state_backward(q: Tensor, k: Tensor, w: Tensor, p: Tensor, gc: Tensor | None, do: Tensor, dht: Tensor | None,
                   scale: float, m: dict) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """(dS_{n+1} per chunk ``[B·H, NT, Dk, Dv]``, dVn ``[B·H, Tp, Dv]``, dS_0 ``[B, H, Dk, Dv]``), all fp32."""
    B, H, NT, Tp, DK, DV, C = m["B"], m["H"], m["NT"], m["Tp"], m["DK"], m["DV"], m["C"]
    use_g = gc is not None
    dh = q.new_empty(B * H, NT, DK, DV, dtype=torch.float32)
    dvn = q.new_empty(B * H, Tp, DV, dtype=torch.float32)
    dh0 = q.new_empty(B, H, DK, DV, dtype=torch.float32)
    bwd_dh_kernel[(m["NV_h"], B * H)](
        q, k, w, p, gc if use_g else w, do, dht if dht is not None else dh0, dh, dvn, dh0, scale, m["T"], Tp, NT,
        H=H, DK=DK, DV=DV, C=C, BK=m["BK"], NK=m["NK"], BV=m["BV_h"], USE_G=use_g, HAS_DHT=dht is not None,
        PREC=m["PREC"], num_warps=m["W"], num_stages=m["S_h"],
    )  # fmt: skip
    return dh, dvn, dh0
