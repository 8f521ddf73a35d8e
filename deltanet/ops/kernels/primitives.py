"""Small ``@triton.jit`` helpers shared by the kernel stages: dots, Γ, the UT solve, masked row loads and stores."""

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
def load_rows(ptr, b, h, t, T, H: tl.constexpr, D: tl.constexpr, cols):
    """Rows t of one (b, h) from a ``[B, T, H, D]`` tensor as fp32 [C, BD]; rows ≥ T and cols ≥ D read 0."""
    mask = (t[:, None] < T) & (cols[None, :] < D)
    return tl.load(ptr + ((b * T + t[:, None]) * H + h) * D + cols[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def store_rows(ptr, x, b, h, t, T, H: tl.constexpr, D: tl.constexpr, cols):
    mask = (t[:, None] < T) & (cols[None, :] < D)
    tl.store(ptr + ((b * T + t[:, None]) * H + h) * D + cols[None, :], x.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def load_scalars(ptr, b, h, t, T, H: tl.constexpr):
    """β or g of rows t, one (b, h), fp32 [C]; rows ≥ T read 0."""
    return tl.load(ptr + (b * T + t) * H + h, mask=t < T, other=0.0).to(tl.float32)
