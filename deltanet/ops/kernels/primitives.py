"""Small ``@triton.jit`` helpers shared by the kernel stages: dots, Γ, the UT solve, block loads and stores.

Every block is addressed as a scalar base pointer (row r0, column c0) plus an offset tensor that depends only on the
block's shape, and the columns of inputs and intermediates are masked only when the block width does not divide the
row: the compiler then keeps one offset tensor per shape in registers, not one per key tile (per-tile offsets and
masks, hoisted out of the chunk loop, were much of what made a 256-wide key head spill).
"""

import triton
import triton.language as tl


@triton.jit
def mm(a, b, PREC: tl.constexpr):
    return tl.dot(a, b, input_precision=PREC)


@triton.jit
def gamma(G, r):
    """Γ_ij = exp(G_i − G_j) on/below the diagonal, 0 above (no overflow: the exponent is masked first)."""
    causal = r[:, None] >= r[None, :]
    diff = tl.where(causal, G[:, None] - G[None, :], 0.0)
    return tl.where(causal, tl.exp(diff), 0.0)


@triton.jit
def ut_solve(a, r, C: tl.constexpr):
    """T = (I + A)⁻¹ for strictly lower A [C, C]: row i of T = e_i − Σ_{m<i} A_im T_m (rows m < i final)."""
    tm = tl.zeros([C, C], dtype=tl.float32)
    for i in range(C):
        sel = r[:, None] == i
        a_i = tl.sum(tl.where(sel, a, 0.0), 0)  # row i of A, indexed by m
        t_i = tl.where(r == i, 1.0, 0.0) - tl.sum(a_i[:, None] * tm, 0)
        tm = tl.where(sel, t_i[None, :], tm)
    return tm


@triton.jit
def _offsets(R: tl.constexpr, BC: tl.constexpr, STRIDE: tl.constexpr):
    return tl.arange(0, R)[:, None] * STRIDE + tl.arange(0, BC)[None, :]


@triton.jit
def _user_mask(t0, T, c0, C: tl.constexpr, BC: tl.constexpr, D: tl.constexpr):
    mask = tl.arange(0, C)[:, None] < T - t0
    if D % BC != 0:
        mask = mask & (tl.arange(0, BC)[None, :] < D - c0)
    return mask


@triton.jit
def load_rows(ptr, b, h, t0, T, H: tl.constexpr, D: tl.constexpr, c0, C: tl.constexpr, BC: tl.constexpr):
    """Rows t0 … t0 + C − 1, columns c0 … c0 + BC − 1 of one (b, h) of a ``[B, T, H, D]`` tensor as fp32 [C, BC];
    rows ≥ T and columns ≥ D read 0."""
    p = ptr + (((b * T + t0) * H + h) * D + c0) + _offsets(C, BC, H * D)
    return tl.load(p, mask=_user_mask(t0, T, c0, C, BC, D), other=0.0).to(tl.float32)


@triton.jit
def store_rows(ptr, x, b, h, t0, T, H: tl.constexpr, D: tl.constexpr, c0, C: tl.constexpr, BC: tl.constexpr):
    p = ptr + (((b * T + t0) * H + h) * D + c0) + _offsets(C, BC, H * D)
    tl.store(p, x.to(ptr.dtype.element_ty), mask=_user_mask(t0, T, c0, C, BC, D))


@triton.jit
def load_scalars(ptr, b, h, t0, T, H: tl.constexpr, C: tl.constexpr):
    """β or g of rows t0 … t0 + C − 1, one (b, h), fp32 [C]; rows ≥ T read 0."""
    r = tl.arange(0, C)
    return tl.load(ptr + ((b * T + t0) * H + h) + r * H, mask=r < T - t0, other=0.0).to(tl.float32)


@triton.jit
def store_scalars(ptr, x, b, h, t0, T, H: tl.constexpr, C: tl.constexpr):
    r = tl.arange(0, C)
    tl.store(ptr + ((b * T + t0) * H + h) + r * H, x.to(ptr.dtype.element_ty), mask=r < T - t0)


@triton.jit
def load_tile(ptr, r0, c0, C: tl.constexpr, BC: tl.constexpr, D: tl.constexpr):
    """Rows r0 … r0 + C − 1 (r0 = bh·Tp + t0), columns c0 … c0 + BC − 1 of a heads-first fp32 intermediate
    ``[B·H, Tp, D]`` (W, U, Vn, partials); columns ≥ D read 0."""
    p = ptr + (r0 * D + c0) + _offsets(C, BC, D)
    if D % BC == 0:
        x = tl.load(p)
    else:
        x = tl.load(p, mask=tl.arange(0, BC)[None, :] < D - c0, other=0.0)
    return x


@triton.jit
def store_tile(ptr, x, r0, c0, C: tl.constexpr, BC: tl.constexpr, D: tl.constexpr):
    p = ptr + (r0 * D + c0) + _offsets(C, BC, D)
    if D % BC == 0:
        tl.store(p, x)
    else:
        tl.store(p, x, mask=tl.arange(0, BC)[None, :] < D - c0)


@triton.jit
def _state_block(ptr, k0, v0, BK: tl.constexpr, BV: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr):
    """Pointers and mask of rows k0 … k0 + BK − 1, columns v0 … v0 + BV − 1 of a row-major [DK, DV] state at ptr.
    Masked even when the block divides the state: the masked store compiles with fewer registers (sm_90, triton
    3.9), which is what keeps bwd_dh_kernel free of spills at Dk = 256."""
    p = ptr + (k0 * DV + v0) + _offsets(BK, BV, DV)
    return p, (tl.arange(0, BK)[:, None] < DK - k0) & (tl.arange(0, BV)[None, :] < DV - v0)


@triton.jit
def load_state(ptr, k0, v0, BK: tl.constexpr, BV: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr):
    """Rows k0 … k0 + BK − 1, columns v0 … v0 + BV − 1 of a row-major [DK, DV] state at ptr, as fp32."""
    p, mask = _state_block(ptr, k0, v0, BK, BV, DK, DV)
    return tl.load(p, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def store_state(ptr, s, k0, v0, BK: tl.constexpr, BV: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr):
    p, mask = _state_block(ptr, k0, v0, BK, BV, DK, DV)
    tl.store(p, s, mask=mask)
