"""Adds a local (intra-chunk) causal softmax self-attention over the raw values to the baseline output.

Change vs the baseline loop: the baseline output is kept and a second term is added, ordinary softmax attention of
the chunk's queries over the chunk's keys and *raw values* v (not the errors u); the state is untouched by it::

    u = U − W S
    O = Q S + (Q Kᵀ ⊙ M) u  +  softmax_causal(Q Kᵀ / TEMPERATURE) V
    S ← S + Kᵀ u

Interpretation: "local" = the window is the current chunk (what the loop body sees), causal within it; "add" =
plain sum with weight 1, no extra parameters. TEMPERATURE = 1 on the 1/√Dk-scaled scores. The window follows the
chunk boundaries, so outputs depend on the chunk size (CHUNK_DEPENDENT).
"""

from deltanet.variants._common import causal_softmax, corrected_values, linear_attention, read, scores, write

MIXER = "delta"
CHUNK_DEPENDENT = True
USES_KERNEL = False
TEMPERATURE = 1.0


def loop_body(chunk, carry, params):
    S = carry["S"]
    u = corrected_values(chunk, S)
    local = causal_softmax(scores(chunk) / TEMPERATURE, chunk.causal_mask()) @ chunk.v
    return read(chunk, S, linear_attention(chunk), u) + local, {**carry, "S": write(chunk, S, u)}
