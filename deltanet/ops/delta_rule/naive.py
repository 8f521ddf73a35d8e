"""Reference delta rule: token-by-token recurrence and the chunkwise (UT/WY) form, plain PyTorch, fp32 compute.

Math (``docs/deltanet-math.md`` §1; fla ``fla/ops/delta_rule/naive.py``), row vectors, per head::

    S_t = S_{t-1} + k_tᵀ β_t (v_t − k_t S_{t-1}),     o_t = q_t S_t      (q pre-scaled by 1/√Dk)

Layout ``[B, T, H, D]``; β ``[B, T, H]``; states ``[B, H, Dk, Dv]`` in fp32; outputs in the input dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

from deltanet.ops.chunkwise import (
    Carry,
    Chunk,
    InitCarry,
    LoopBody,
    check_inputs,
    chunkwise,
    corrected_values,
    default_init_carry,
    linear_attention,
    loop_precision,
    read,
    write,
)


def delta_rule_recurrence(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, scale: float | None = None, initial_state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """One step per token: p = k S, ũ = β (v − p), S ← S + kᵀ ũ, o = q S. Returns (o, final S)."""
    B, T, H, Dk, Dv = check_inputs(q, k, v, beta, initial_state=initial_state)
    scale = Dk**-0.5 if scale is None else scale
    qf, kf, vf, bf = (x.float().movedim(1, 2) for x in (q * scale, k, v, beta))  # [B, H, T, ...]
    S = q.new_zeros(B, H, Dk, Dv, dtype=torch.float32)
    if initial_state is not None:
        S = S + initial_state.float()
    outs = []
    with loop_precision(q.device.type):  # the reference is fp32 whatever the caller's autocast
        for t in range(T):
            k_t, q_t = kf[:, :, t], qf[:, :, t]
            err = bf[:, :, t, None] * (vf[:, :, t] - torch.einsum("bhk,bhkv->bhv", k_t, S))
            S = S + k_t[..., :, None] * err[..., None, :]
            outs.append(torch.einsum("bhk,bhkv->bhv", q_t, S))
    return torch.stack(outs, dim=2).movedim(1, 2).to(q.dtype), S


def baseline_loop_body(chunk: Chunk, carry: Carry, params: object | None) -> tuple[Tensor, Carry]:
    """DeltaNet per-chunk step: u = U − W S; O = Q S + (Q Kᵀ ⊙ M) u; S ← S + Kᵀ u (M: causal, diagonal kept)."""
    S = carry["S"]
    u = corrected_values(chunk, S)
    return read(chunk, S, linear_attention(chunk), u), {**carry, "S": write(chunk, S, u)}


def delta_rule_chunkwise(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    chunk_size: int = 32,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    loop_body: LoopBody = baseline_loop_body,
    params: object | None = None,
    init_carry: InitCarry = default_init_carry,
    precision: str = "fp32",
) -> tuple[Tensor, Tensor]:
    """Chunkwise delta rule, any T (zero-padded to a multiple of ``chunk_size``). Returns (o, final S).

    Per chunk, all at once: A = strict_lower(diag(β) K Kᵀ), T = (I + A)⁻¹, W = T diag(β) K, U = T diag(β) V.
    Then ``loop_body`` runs sequentially over chunks (see :mod:`deltanet.ops.chunkwise`). Zero padding has k = v = β = 0,
    so it leaves the baseline state untouched. ``precision``: ``fp32`` (whatever the autocast) or ``autocast``
    (:func:`deltanet.ops.chunkwise.loop_precision`).
    """
    return chunkwise(q, k, v, beta, None, chunk_size, scale, initial_state, loop_body, params, init_carry, precision)
