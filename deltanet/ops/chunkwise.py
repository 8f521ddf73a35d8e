"""Shared pieces of the chunkwise delta-rule ops: input checks, chunking, and the per-chunk loop seam.

The chunkwise algorithm (``docs/deltanet-math.md`` §1.2, §2.2; fla ``ops/delta_rule/naive.py``) has two
parts: a parallel UT/WY transform per chunk that yields W and the pseudo-values U, then a sequential loop over
chunks carrying the state S. A *variant* replaces only the body of that loop::

    carry = init_carry(S0)                       # {"S": S0} for the baselines
    for i in range(num_chunks):
        O_i, carry = body(chunk_i, carry, params)

``chunk_i`` is a :class:`Chunk` (everything precomputed for chunk i), ``carry`` a dict of fp32 tensors that
must contain ``"S"`` (``[B, H, Dk, Dv]``), ``params`` the variant's learnable parameters (or ``None``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import Tensor

Carry = dict[str, Tensor]

# How the naive ops compute inside the caller's autocast (``ModelConfig.loop_precision``; docs/fidelity.md,
# "Loop precision").
LOOP_PRECISIONS = ("fp32", "autocast")


@dataclass(frozen=True)
class Chunk:
    """Everything the loop body may use for one chunk; heads-first ``[B, H, C, ...]``, fp32.

    q is already scaled by 1/sqrt(Dk). ``w``/``u`` are the UT-transform outputs W = T K_β (gated: T (K_β ⊙ e^G))
    and U = T V_β. ``g_cum`` is the within-chunk cumulative log decay G (``None`` for the ungated rule).
    ``valid`` marks real (non-padding) rows; ``positions`` are absolute token indices of the rows.
    """

    q: Tensor  # [B, H, C, Dk]
    k: Tensor  # [B, H, C, Dk]
    v: Tensor  # [B, H, C, Dv]
    beta: Tensor  # [B, H, C]
    w: Tensor  # [B, H, C, Dk]
    u: Tensor  # [B, H, C, Dv]
    g_cum: Tensor | None  # [B, H, C]
    index: int
    positions: Tensor  # [C] int64
    valid: Tensor  # [C] bool

    @property
    def size(self) -> int:
        return self.q.shape[-2]

    def causal_mask(self, diagonal: int = 0) -> Tensor:
        """Boolean lower-triangular mask [C, C]; ``diagonal=0`` keeps the diagonal, ``-1`` excludes it."""
        return torch.ones(self.size, self.size, dtype=torch.bool, device=self.q.device).tril(diagonal)

    def decay_matrix(self) -> Tensor:
        """Γ_ij = exp(G_i − G_j) for i ≥ j, 0 above the diagonal (all ones on/below it when ungated)."""
        if self.g_cum is None:
            return self.causal_mask().to(self.q.dtype).expand(*self.q.shape[:2], -1, -1)
        return decay_matrix(self.g_cum)


class LoopBody(Protocol):
    def __call__(self, chunk: Chunk, carry: Carry, params: object | None) -> tuple[Tensor, Carry]: ...


InitCarry = Callable[[Tensor], Carry]


def default_init_carry(state: Tensor) -> Carry:
    return {"S": state}


def check_inputs(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, g: Tensor | None = None, initial_state: Tensor | None = None
) -> tuple[int, int, int, int, int]:
    """Validate ``[B, T, H, D]`` inputs; return (B, T, H, Dk, Dv). Raises ValueError naming the bad argument."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.dim() != 4:
            raise ValueError(f"{name} must have shape [batch, time, heads, dim] (rank 4), got rank {x.dim()}: {tuple(x.shape)}")
    B, T, H, Dk = q.shape
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q {tuple(q.shape)} = [batch, time, heads, key_dim], got {tuple(k.shape)}")
    if v.shape[:3] != (B, T, H):
        raise ValueError(f"v must have shape [{B}, {T}, {H}, value_dim] to match q, got {tuple(v.shape)}")
    Dv = v.shape[3]
    if beta.shape != (B, T, H):
        raise ValueError(f"beta must have shape [batch, time, heads] = [{B}, {T}, {H}], got {tuple(beta.shape)}")
    if g is not None and g.shape != (B, T, H):
        raise ValueError(f"g must have shape [batch, time, heads] = [{B}, {T}, {H}], got {tuple(g.shape)}")
    if initial_state is not None and initial_state.shape != (B, H, Dk, Dv):
        raise ValueError(
            f"initial_state must have shape [batch, heads, key_dim, value_dim] = [{B}, {H}, {Dk}, {Dv}], "
            f"got {tuple(initial_state.shape)}"
        )
    if T == 0:
        raise ValueError("q has an empty time dimension (T = 0)")
    return B, T, H, Dk, Dv


def check_chunk_size(chunk_size: int) -> None:
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")


def to_chunks(x: Tensor, chunk_size: int) -> Tensor:
    """``[B, T, H, ...]`` → fp32 heads-first ``[B, H, N, C, ...]``, zero-padding T up to N·C."""
    T = x.shape[1]
    pad = (-T) % chunk_size
    x = x.float().movedim(2, 1)  # [B, H, T, ...]
    if pad:
        x = torch.cat([x, x.new_zeros(*x.shape[:2], pad, *x.shape[3:])], dim=2)
    return x.reshape(*x.shape[:2], -1, chunk_size, *x.shape[3:])


def decay_matrix(g_cum: Tensor) -> Tensor:
    """Γ_ij = exp(G_i − G_j) for i ≥ j and 0 above the diagonal, from the within-chunk cumulative log decay G."""
    diff = g_cum[..., :, None] - g_cum[..., None, :]
    mask = torch.ones(diff.shape[-2:], dtype=torch.bool, device=diff.device).tril()
    return torch.exp(diff.masked_fill(~mask, float("-inf")))


def loop_precision(device_type: str, precision: str = "fp32") -> contextlib.AbstractContextManager:
    """The precision context a chunkwise op runs in, whatever autocast the caller has on.

    ``fp32``: autocast off for ``device_type``, so the UT/WY transform and every loop-body matmul run in fp32 (the
    ops upcast their inputs in :func:`to_chunks`). ``autocast``: the caller's autocast stays on, so the matmuls run
    in its dtype (bf16 under MAD's bf16-mixed training), as fla's naive loop did in the reference system.
    """
    if precision not in LOOP_PRECISIONS:
        raise ValueError(f"loop_precision must be one of {LOOP_PRECISIONS}, got {precision!r}")
    return torch.autocast(device_type, enabled=False) if precision == "fp32" else contextlib.nullcontext()


def forward_substitution(a_strict: Tensor) -> Tensor:
    """T = (I + A)⁻¹ for a strictly lower-triangular A, row by row: T_i = e_i − Σ_{m<i} A_im T_m.

    Only elementwise products and sums, so it runs in any dtype (bf16 included), like fla's naive loop. Rows are
    taken with ``unbind`` (backward: one stack), not by indexing row i (backward: a full-size zero gradient per row).
    """
    C = a_strict.shape[-1]
    a_rows = a_strict.unbind(-2)
    eye_rows = torch.eye(C, dtype=a_strict.dtype, device=a_strict.device).unbind(0)
    rows = [eye_rows[0].expand_as(a_rows[0])]
    for i in range(1, C):
        done = torch.stack(rows, dim=-2)  # [..., i, C]: rows m < i, final
        rows.append(eye_rows[i] - (a_rows[i][..., :i, None] * done).sum(-2))
    return torch.stack(rows, dim=-2)


def ut_transform(a_strict: Tensor) -> Tensor:
    """T = (I + A)⁻¹ for a strictly lower-triangular A (per chunk).

    fp32/fp64: one unit-triangular solve (equal to the forward-substitution sweep of docs/deltanet-math.md §1.2;
    ``tests/test_ops_naive.py`` checks the two agree). Other dtypes (bf16 under ``loop_precision: autocast``, where
    ``torch.linalg.solve_triangular`` has no kernel): :func:`forward_substitution` in that dtype.
    """
    if a_strict.dtype not in (torch.float32, torch.float64):
        return forward_substitution(a_strict)
    eye = torch.eye(a_strict.shape[-1], dtype=a_strict.dtype, device=a_strict.device)
    return torch.linalg.solve_triangular(eye + a_strict, eye.expand_as(a_strict), upper=False, unitriangular=True)


def wy_representation(k: Tensor, v: Tensor, beta: Tensor, g_cum: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """W and the pseudo-values U of each chunk (last two dims ``[C, D]``; §1.2 / §2.2 of deltanet-math.md)::

        A = strict_lower((K_β Kᵀ) ⊙ Γ),  T = (I + A)⁻¹,  W = T (K_β ⊙ e^G),  U = T V_β     (Γ, e^G = 1 ungated)
    """
    k_beta = k * beta[..., None]
    a = k_beta @ k.transpose(-1, -2)
    if g_cum is not None:
        a = a * decay_matrix(g_cum)
        k_beta = k_beta * g_cum[..., None].exp()
    t_mat = ut_transform(a.tril(-1))
    return t_mat @ k_beta, t_mat @ (v * beta[..., None])


def corrected_values(chunk: Chunk, S: Tensor) -> Tensor:
    """u = U − W S: the chunk's errors corrected for the carried state (row r = β_r (v_r − k_r S_{r−1}))."""
    return chunk.u - chunk.w @ S


def scores(chunk: Chunk) -> Tensor:
    """Raw intra-chunk scores Q Kᵀ ``[B, H, C, C]`` (q carries 1/√Dk); the future is *not* masked."""
    return chunk.q @ chunk.k.transpose(-1, -2)


def linear_attention(chunk: Chunk) -> Tensor:
    """Baseline intra-chunk attention Q Kᵀ ⊙ M (causal mask, diagonal kept)."""
    return scores(chunk).masked_fill(~chunk.causal_mask(), 0.0)


def read(chunk: Chunk, S: Tensor, attn: Tensor, u: Tensor) -> Tensor:
    """O = Q S + attn u: read of the carried state plus the intra-chunk attention over the errors."""
    return chunk.q @ S + attn @ u


def write(chunk: Chunk, S: Tensor, u: Tensor) -> Tensor:
    """S + Kᵀ u (the state after this chunk; padding rows have k = 0 and write nothing)."""
    return S + chunk.k.transpose(-1, -2) @ u


def run_chunk_loop(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    w: Tensor,
    u: Tensor,
    g_cum: Tensor | None,
    state: Tensor,
    body: LoopBody,
    params: object | None = None,
    init_carry: InitCarry = default_init_carry,
    valid_length: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Sequential loop over chunks; inputs heads-first ``[B, H, N, C, ...]`` fp32. Returns (O ``[B,H,N·C,Dv]``, S).

    Chunks are taken with one ``unbind`` per input, whose backward is one ``stack``: indexing chunk i of each input
    instead costs a full-size zero-filled gradient per chunk and input in the backward (N² work in N).
    """
    num_chunks, C = q.shape[2], q.shape[3]
    total = num_chunks * C
    valid_length = total if valid_length is None else valid_length
    positions = torch.arange(total, device=q.device)
    carry = init_carry(state)
    outputs = []
    per_chunk = zip(*(x.unbind(2) for x in (q, k, v, beta, w, u)))
    g_chunks = [None] * num_chunks if g_cum is None else g_cum.unbind(2)
    for i, ((q_i, k_i, v_i, beta_i, w_i, u_i), g_i) in enumerate(zip(per_chunk, g_chunks)):
        pos = positions[i * C : (i + 1) * C]
        chunk = Chunk(q=q_i, k=k_i, v=v_i, beta=beta_i, w=w_i, u=u_i, g_cum=g_i, index=i, positions=pos,
                      valid=pos < valid_length)  # fmt: skip
        o, carry = body(chunk, carry, params)
        outputs.append(o)
    return torch.stack(outputs, dim=2).reshape(*q.shape[:2], total, -1), carry["S"]


def chunkwise(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    g: Tensor | None,
    chunk_size: int,
    scale: float | None,
    initial_state: Tensor | None,
    body: LoopBody,
    params: object | None,
    init_carry: InitCarry,
    precision: str,
) -> tuple[Tensor, Tensor]:
    """The chunkwise form shared by both naive ops (``g is None``: the ungated rule). Returns (o, final S fp32).

    Zero-pads T to a multiple of ``chunk_size``, computes G = within-chunk cumsum of g and the UT/WY transform of
    every chunk at once, then runs ``body`` over the chunks; all of it inside :func:`loop_precision`.
    """
    B, T, H, Dk, Dv = check_inputs(q, k, v, beta, g=g, initial_state=initial_state)
    check_chunk_size(chunk_size)
    scale = Dk**-0.5 if scale is None else scale
    with loop_precision(q.device.type, precision):
        qc, kc, vc = to_chunks(q * scale, chunk_size), to_chunks(k, chunk_size), to_chunks(v, chunk_size)
        bc = to_chunks(beta, chunk_size)  # [B, H, N, C]
        gc = None if g is None else to_chunks(g, chunk_size).cumsum(-1)
        w, u = wy_representation(kc, vc, bc, gc)
        S0 = q.new_zeros(B, H, Dk, Dv, dtype=torch.float32)
        if initial_state is not None:
            S0 = S0 + initial_state.float()
        o, S = run_chunk_loop(qc, kc, vc, bc, w, u, gc, S0, body, params, init_carry, valid_length=T)
    return from_heads_first(o, T, q.dtype), S.float()


def from_heads_first(o: Tensor, T: int, dtype: torch.dtype) -> Tensor:
    """``[B, H, T_pad, D]`` → ``[B, T, H, D]`` in ``dtype``, dropping the padding."""
    return o[:, :, :T].movedim(1, 2).to(dtype)
