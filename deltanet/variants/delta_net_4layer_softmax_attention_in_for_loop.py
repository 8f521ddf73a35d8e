"""Intra-chunk attention over the errors becomes a causal softmax of Q Kᵀ (state read and write unchanged).

Change vs the baseline loop: the linear intra-chunk weights Q Kᵀ ⊙ M are replaced by a row softmax over the
causal part of the chunk; the state read Q S and the write S ← S + Kᵀ u are the baseline's::

    u = U − W S
    A = softmax_causal(Q Kᵀ / TEMPERATURE)      row r normalises over columns c ≤ r of this chunk
    O = Q S + A u,    S ← S + Kᵀ u

Interpretation: the logits are the baseline's scores (q already carries 1/√Dk, the usual softmax-attention scale),
TEMPERATURE = 1. The softmax normalises over the rows of the current chunk only, so outputs depend on the chunk
size (CHUNK_DEPENDENT).
"""

from deltanet.variants._common import causal_softmax, corrected_values, read, scores, write

MIXER = "delta"
CHUNK_DEPENDENT = True
USES_KERNEL = False
TEMPERATURE = 1.0


def loop_body(chunk, carry, params):
    S = carry["S"]
    u = corrected_values(chunk, S)
    attn = causal_softmax(scores(chunk) / TEMPERATURE, chunk.causal_mask())
    return read(chunk, S, attn, u), {**carry, "S": write(chunk, S, u)}
