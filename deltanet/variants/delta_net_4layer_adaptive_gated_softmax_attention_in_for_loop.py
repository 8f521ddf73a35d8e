"""Intra-chunk attention mixes softmax and raw Q Kᵀ weights through a learned, per-token sigmoid gate.

Change vs the baseline loop: like hybrid_softmax_raw_attention, but the mixing weight is a gate computed from
each query row with learnable per-head parameters (w_h ∈ R^Dk, b_h); state read and write unchanged::

    u = U − W S
    γ_r = σ(q_r · w_h + b_h)                                   (one gate per row r, per head h)
    A_r = γ_r · softmax_causal(Q Kᵀ / TEMPERATURE)_r + (1 − γ_r) · (Q Kᵀ ⊙ M)_r
    O = Q S + A u,    S ← S + Kᵀ u

Interpretation: "adaptive" = data-dependent (per query token) rather than one learned constant; the gate reads
the (scaled) query only, so it is causal. Init w = 0, b = GATE_BIAS_INIT = 0 (γ = 0.5: starts as the hybrid
variant). TEMPERATURE = 1. Chunk-normalised softmax, so CHUNK_DEPENDENT.
"""

import torch

from deltanet.variants._common import (
    LoopParams,
    causal_softmax,
    corrected_values,
    linear_attention,
    per_head,
    read,
    scores,
    write,
)

MIXER = "delta"
CHUNK_DEPENDENT = True
USES_KERNEL = False
GATE_BIAS_INIT = 0.0
TEMPERATURE = 1.0


def make_params(num_heads, head_k_dim, head_v_dim):
    return LoopParams(
        gate_weight=torch.zeros(num_heads, head_k_dim), gate_bias=torch.full((num_heads,), GATE_BIAS_INIT)
    )


def loop_body(chunk, carry, params):
    S = carry["S"]
    u = corrected_values(chunk, S)
    logit = torch.einsum("bhck,hk->bhc", chunk.q, params.gate_weight.float())[..., None]
    gate = torch.sigmoid(logit + per_head(params.gate_bias))  # [B, H, C, 1]: one gate per query row
    soft = causal_softmax(scores(chunk) / TEMPERATURE, chunk.causal_mask())
    attn = gate * soft + (1.0 - gate) * linear_attention(chunk)
    return read(chunk, S, attn, u), {**carry, "S": write(chunk, S, u)}
