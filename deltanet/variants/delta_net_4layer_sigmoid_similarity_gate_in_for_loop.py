"""Each intra-chunk attention weight q·k is gated by a sigmoid of the query–key cosine similarity.

Change vs the baseline loop: the intra-chunk weights are multiplied elementwise by σ(cos(q_r, k_c) / TEMPERATURE);
state read and write unchanged::

    u = U − W S
    A = (Q Kᵀ ⊙ σ(cos(Q, K) / TEMPERATURE)) ⊙ M
    O = Q S + A u,    S ← S + Kᵀ u

Interpretation: a soft, parameter-free similarity gate: pairs with clearly positive similarity pass (cos = 0.3 →
σ(3) ≈ 0.95), unrelated or opposed pairs are damped (cos = 0 → 0.5, cos = −0.3 → 0.05). It uses cosine rather than
the 1/√Dk-scaled score so the gate is scale-free; TEMPERATURE = 0.1, EPS = 1e-6 in the norms. Only intra-chunk
pairs are gated (earlier chunks are read through S), so outputs depend on the chunk size (CHUNK_DEPENDENT).
"""

import torch

from deltanet.variants._common import corrected_values, cosine_scores, linear_attention, read, write

MIXER = "delta"
CHUNK_DEPENDENT = True
USES_KERNEL = False
TEMPERATURE = 0.1
EPS = 1e-6


def loop_body(chunk, carry, params):
    S = carry["S"]
    u = corrected_values(chunk, S)
    attn = linear_attention(chunk) * torch.sigmoid(cosine_scores(chunk, EPS) / TEMPERATURE)
    return read(chunk, S, attn, u), {**carry, "S": write(chunk, S, u)}
