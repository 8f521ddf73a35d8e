"""The state moves by a heavy-ball momentum of the per-chunk delta-rule updates.

Change vs the baseline loop: the chunk's net update ΔS = Kᵀ u is accumulated into a momentum buffer M carried
across chunks, and the state moves by M instead of ΔS; the chunk's own output is the baseline's::

    u = U − W S;    O = Q S + (Q Kᵀ ⊙ M_causal) u
    M ← MOMENTUM · M + Kᵀ u
    S ← S + M

Interpretation: ΔS = Kᵀ u is the delta rule's step on the chunk's regression loss ½‖K S − V‖²_β; heavy-ball
(SGD / Titans-style) momentum on it, MOMENTUM = 0.9, M starts at zero (so the first chunk is the baseline). The
momentum is per chunk (that is the loop's step), so outputs depend on the chunk size (CHUNK_DEPENDENT).
"""

import torch

from deltanet.variants._common import corrected_values, linear_attention, read, state_delta

MIXER = "delta"
CHUNK_DEPENDENT = True
USES_KERNEL = False
MOMENTUM = 0.9


def init_carry(state):
    return {"S": state, "M": torch.zeros_like(state)}


def loop_body(chunk, carry, params):
    S = carry["S"]
    u = corrected_values(chunk, S)
    M = MOMENTUM * carry["M"] + state_delta(chunk, u)
    return read(chunk, S, linear_attention(chunk), u), {**carry, "S": S + M, "M": M}
