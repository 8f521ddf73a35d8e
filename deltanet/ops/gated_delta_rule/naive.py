"""Reference gated delta rule: token-by-token recurrence and the chunkwise form, plain PyTorch, fp32 compute.

Math (``docs/deltanet-math.md`` §2; fla ``fla/ops/gated_delta_rule/naive.py``), per head, g_t ≤ 0::

    S_t = e^{g_t} (I − β_t k_tᵀ k_t) S_{t-1} + β_t k_tᵀ v_t,     o_t = q_t S_t

Layout ``[B, T, H, D]``; β and g ``[B, T, H]``; states ``[B, H, Dk, Dv]`` fp32; outputs in the input dtype.
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
    loop_precision,
    scores,
)


def gated_delta_rule_recurrence(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    beta: Tensor,
    scale: float | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One step per token: S ← e^g S; ũ = β (v − k S); S ← S + kᵀ ũ; o = q S. Returns (o, final S)."""
    B, T, H, Dk, Dv = check_inputs(q, k, v, beta, g=g, initial_state=initial_state)
    scale = Dk**-0.5 if scale is None else scale
    qf, kf, vf, bf, gf = (x.float().movedim(1, 2) for x in (q * scale, k, v, beta, g))
    S = q.new_zeros(B, H, Dk, Dv, dtype=torch.float32)
    if initial_state is not None:
        S = S + initial_state.float()
    outs = []
    with loop_precision(q.device.type):  # the reference is fp32 whatever the caller's autocast
        for t in range(T):
            S = S * gf[:, :, t, None, None].exp()
            k_t = kf[:, :, t]
            err = bf[:, :, t, None] * (vf[:, :, t] - torch.einsum("bhk,bhkv->bhv", k_t, S))
            S = S + k_t[..., :, None] * err[..., None, :]
            outs.append(torch.einsum("bhk,bhkv->bhv", qf[:, :, t], S))
    return torch.stack(outs, dim=2).movedim(1, 2).to(q.dtype), S


def gated_loop_body(chunk: Chunk, carry: Carry, params: object | None) -> tuple[Tensor, Carry]:
    """Gated DeltaNet per-chunk step (Γ_ij = e^{G_i − G_j} causal)::

    u = U − W S;  O = (Q ⊙ e^G) S + (Q Kᵀ ⊙ Γ) u;  S ← e^{G_last} S + (K ⊙ e^{G_last − G})ᵀ u
    """
    S, G = carry["S"], chunk.g_cum
    u = corrected_values(chunk, S)
    attn = scores(chunk) * chunk.decay_matrix()
    o = (chunk.q * G[..., None].exp()) @ S + attn @ u
    g_last = G[..., -1:]
    k_decayed = chunk.k * (g_last - G)[..., None].exp()
    S = S * g_last[..., None].exp() + k_decayed.transpose(-1, -2) @ u
    return o, {**carry, "S": S}


def gated_delta_rule_chunkwise(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    beta: Tensor,
    chunk_size: int = 64,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    loop_body: LoopBody = gated_loop_body,
    params: object | None = None,
    init_carry: InitCarry = default_init_carry,
    precision: str = "fp32",
) -> tuple[Tensor, Tensor]:
    """Chunkwise gated delta rule, any T (zero-padded; padding has g = 0, so no extra decay). Returns (o, S).

    G = within-chunk cumsum of g; A = strict_lower((K_β Kᵀ) ⊙ Γ); T = (I + A)⁻¹; U = T V_β; W = T (K_β ⊙ e^G).
    ``precision`` as in :func:`deltanet.ops.delta_rule.delta_rule_chunkwise`.
    """
    return chunkwise(q, k, v, beta, g, chunk_size, scale, initial_state, loop_body, params, init_carry, precision)
