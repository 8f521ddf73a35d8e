"""Intra-chunk attention is a fixed 50/50 mix of a causal softmax and the raw (linear) Q Kᵀ weights.

Change vs the baseline loop: the intra-chunk weights over the errors become a convex mix of the softmax weights
(as in softmax_attention) and the baseline's raw causal weights; state read and write unchanged::

    u = U − W S
    A = MIX · softmax_causal(Q Kᵀ / TEMPERATURE) + (1 − MIX) · (Q Kᵀ ⊙ M)
    O = Q S + A u,    S ← S + Kᵀ u

Interpretation: "hybrid" = a fixed, non-learned mix, MIX = 0.5 (the learned, per-token version is
adaptive_gated_softmax_attention). TEMPERATURE = 1 on the 1/√Dk-scaled scores. Chunk-normalised softmax, so
CHUNK_DEPENDENT.
"""

from deltanet.variants._common import causal_softmax, corrected_values, linear_attention, read, scores, write

MIXER = "delta"
CHUNK_DEPENDENT = True
USES_KERNEL = False
MIX = 0.5
TEMPERATURE = 1.0


def loop_body(chunk, carry, params):
    S = carry["S"]
    u = corrected_values(chunk, S)
    soft = causal_softmax(scores(chunk) / TEMPERATURE, chunk.causal_mask())
    attn = MIX * soft + (1.0 - MIX) * linear_attention(chunk)
    return read(chunk, S, attn, u), {**carry, "S": write(chunk, S, u)}
