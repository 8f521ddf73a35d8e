"""The state is updated by an Adam step on the per-chunk delta-rule update (moments carried across chunks).

Change vs the baseline loop: the chunk's net update ΔS = Kᵀ u is treated as a (negative) gradient and fed to
Adam, elementwise over the Dk×Dv state, with the moments m, v in the carry; the chunk's output is the baseline's::

    u = U − W S;    O = Q S + (Q Kᵀ ⊙ M) u;    ΔS = Kᵀ u;    t = chunk index + 1
    m ← β₁ m + (1 − β₁) ΔS;        v ← β₂ v + (1 − β₂) ΔS²
    S ← S + LR · m̂ / sqrt(v̂ + EPS²),   m̂ = m / (1 − β₁ᵗ),  v̂ = v / (1 − β₂ᵗ)

Interpretation: ΔS is the delta rule's step on the chunk's regression loss; standard Adam constants BETA1 = 0.9,
BETA2 = 0.999, EPS = 1e-8 (inside the square root so the gradient is finite where ΔS = 0), step size LR = 0.1 (the
first step moves each entry of S by ≈ ±LR). One Adam step per chunk, so CHUNK_DEPENDENT.
"""

import torch

from deltanet.variants._common import corrected_values, linear_attention, read, state_delta

MIXER = "delta"
CHUNK_DEPENDENT = True
USES_KERNEL = False
LR = 0.1
BETA1 = 0.9
BETA2 = 0.999
EPS = 1e-8


def init_carry(state):
    return {"S": state, "m": torch.zeros_like(state), "v": torch.zeros_like(state)}


def loop_body(chunk, carry, params):
    S = carry["S"]
    u = corrected_values(chunk, S)
    grad = state_delta(chunk, u)
    t = chunk.index + 1
    m = BETA1 * carry["m"] + (1 - BETA1) * grad
    v = BETA2 * carry["v"] + (1 - BETA2) * grad.pow(2)
    step = (m / (1 - BETA1**t)) / torch.sqrt(v / (1 - BETA2**t) + EPS**2)
    return read(chunk, S, linear_attention(chunk), u), {**carry, "S": S + LR * step, "m": m, "v": v}
