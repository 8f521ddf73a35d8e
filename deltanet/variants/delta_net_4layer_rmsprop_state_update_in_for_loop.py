"""The state is updated by an RMSProp step on the per-chunk delta-rule update (second moment carried).

Change vs the baseline loop: the chunk's net update ΔS = Kᵀ u is divided elementwise by the running RMS of past
updates (carried across chunks); the chunk's output is the baseline's::

    u = U − W S;    O = Q S + (Q Kᵀ ⊙ M) u;    ΔS = Kᵀ u
    v ← RHO · v + (1 − RHO) ΔS²
    S ← S + LR · ΔS / sqrt(v + EPS²)

Interpretation: ΔS is the delta rule's step on the chunk's regression loss; plain RMSProp (no momentum, no bias
correction) with RHO = 0.99, EPS = 1e-8 (inside the square root so the gradient is finite where ΔS = 0), LR = 0.01
(without bias correction the first step is ΔS/(0.1|ΔS|), so entries move by ≈ ±0.1, like the Adam variant). One
step per chunk, so CHUNK_DEPENDENT.
"""

import torch

from deltanet.variants._common import corrected_values, linear_attention, read, state_delta

MIXER = "delta"
CHUNK_DEPENDENT = True
USES_KERNEL = False
LR = 0.01
RHO = 0.99
EPS = 1e-8


def init_carry(state):
    return {"S": state, "v": torch.zeros_like(state)}


def loop_body(chunk, carry, params):
    S = carry["S"]
    u = corrected_values(chunk, S)
    grad = state_delta(chunk, u)
    v = RHO * carry["v"] + (1 - RHO) * grad.pow(2)
    S_new = S + LR * grad / torch.sqrt(v + EPS**2)
    return read(chunk, S, linear_attention(chunk), u), {**carry, "S": S_new, "v": v}
