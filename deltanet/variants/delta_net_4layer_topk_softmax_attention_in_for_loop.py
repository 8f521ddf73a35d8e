"""Intra-chunk attention becomes a causal softmax restricted to each row's top-k scores.

Change vs the baseline loop: row r of the intra-chunk weights is a softmax over only the TOPK largest scores
q_r·k_c among its causal columns c ≤ r of the chunk (all of them while fewer than TOPK are visible); the others get
weight 0. State read and write unchanged::

    u = U − W S
    A_r = softmax over c ∈ topk_{c ≤ r}(q_r · k_c) of (q_r · k_c / TEMPERATURE)
    O = Q S + A u,    S ← S + Kᵀ u

Interpretation: "topk" selects keys per query row (sparse attention), TOPK = 8 (1/8 of the default 64-row chunk);
the top-k is taken over the causal columns only, so a row never selects (or is normalised against) a later row.
Same logits as softmax_attention (TEMPERATURE = 1 on the 1/√Dk-scaled scores). Depends on the chunk (CHUNK_DEPENDENT).
"""

from deltanet.variants._common import causal_softmax, corrected_values, read, scores, topk_mask, write

MIXER = "delta"
CHUNK_DEPENDENT = True
USES_KERNEL = False
TOPK = 8
TEMPERATURE = 1.0


def loop_body(chunk, carry, params):
    S = carry["S"]
    u = corrected_values(chunk, S)
    logits = scores(chunk) / TEMPERATURE
    attn = causal_softmax(logits, topk_mask(logits, TOPK, chunk.causal_mask()))
    return read(chunk, S, attn, u), {**carry, "S": write(chunk, S, u)}
