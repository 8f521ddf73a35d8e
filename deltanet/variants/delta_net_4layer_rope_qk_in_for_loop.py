"""Rotary position embedding (RoPE) on q and k inside the loop, at absolute token positions.

Change vs the baseline loop: q and k of every row are rotated by their absolute position p (``chunk.positions``)
and the chunk's WY transform is recomputed from the rotated keys, so the loop is the exact delta rule on rotated
keys; q_t·k_s then depends on p_t − p_s only (rotations preserve the keys' norm, so β-steps stay projections)::

    x̃ = x ⊙ cos(p θ) + rotate_half(x) ⊙ sin(p θ),   θ_j = BASE^(−2j/Dk)   (x = q, k; half-split pairs)
    W, U recomputed from K̃;   u = U − W S;   O = Q̃ S + (Q̃ K̃ᵀ ⊙ M) u;   S ← S + K̃ᵀ u

Interpretation: standard RoPE (GPT-NeoX/Llama half-split layout), BASE = 10000, applied to both the read (Q̃ S,
the intra-chunk scores) and the memory's keys (the state stores rotated keys); with an odd Dk the last feature is
not rotated. Per-token transform, exact recurrence: not CHUNK_DEPENDENT. The fused kernel receives unrotated
q/k, so USES_KERNEL is False.
"""

import torch

from deltanet.ops.delta_rule import baseline_loop_body
from deltanet.variants._common import recompute_wy

MIXER = "delta"
CHUNK_DEPENDENT = False
USES_KERNEL = False
BASE = 10000.0


def rotate(x, positions):
    """RoPE of ``x`` [..., C, D] at integer ``positions`` [C] (half-split pairs (j, j + D//2))."""
    half = x.shape[-1] // 2
    theta = BASE ** (-torch.arange(half, dtype=x.dtype, device=x.device) * 2 / x.shape[-1])
    angle = positions.to(x.dtype)[:, None] * theta  # [C, half]
    cos, sin = angle.cos(), angle.sin()
    x1, x2, rest = x[..., :half], x[..., half : 2 * half], x[..., 2 * half :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], dim=-1)


def loop_body(chunk, carry, params):
    rotated = recompute_wy(chunk, q=rotate(chunk.q, chunk.positions), k=rotate(chunk.k, chunk.positions))
    return baseline_loop_body(rotated, carry, params)
