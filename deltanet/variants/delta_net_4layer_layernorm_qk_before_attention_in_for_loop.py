"""Queries and keys are layer-normalised (parameter-free) before the intra-chunk attention scores.

Change vs the baseline loop: only the intra-chunk weights change; they are computed from layer-normed q and k,
rescaled to the baseline's magnitude. The state read Q S, the WY transform and the write use the original q, k::

    q̃ = LN(q) / √Dk · (1/√Dk),   k̃ = LN(k) / √Dk          LN over the Dk features, EPS = 1e-5, no affine
    u = U − W S;    O = Q S + (Q̃ K̃ᵀ ⊙ M) u;    S ← S + Kᵀ u

Interpretation: "before attention" = before the attention product of the loop (Q_i K_iᵀ), nothing else. LN's output
has RMS 1 (norm √Dk), so it is divided by √Dk to get unit vectors like the mixer's L2-normalised q/k, and q gets
back its 1/√Dk scale (LN would otherwise undo it and inflate the scores √Dk·Dk-fold): the scores become centred
cosines / √Dk. Intra-chunk pairs use q̃·k̃ and earlier chunks q·k, so outputs depend on the chunk size
(CHUNK_DEPENDENT).
"""

from deltanet.variants._common import corrected_values, layer_norm, read, write

MIXER = "delta"
CHUNK_DEPENDENT = True
USES_KERNEL = False
EPS = 1e-5


def loop_body(chunk, carry, params):
    S = carry["S"]
    dk = chunk.q.shape[-1]
    q, k = layer_norm(chunk.q, EPS) / dk, layer_norm(chunk.k, EPS) / dk**0.5
    attn = (q @ k.transpose(-1, -2)).masked_fill(~chunk.causal_mask(), 0.0)
    u = corrected_values(chunk, S)
    return read(chunk, S, attn, u), {**carry, "S": write(chunk, S, u)}
