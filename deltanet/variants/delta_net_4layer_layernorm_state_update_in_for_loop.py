"""After each chunk's write, the state is layer-normalised (parameter-free) along its value dimension.

Change vs the baseline loop: the updated state S + Kᵀ u is normalised row by row (each of the Dk rows, over the Dv
value features) before it is carried to the next chunk; the chunk's output is the baseline's::

    u = U − W S;    O = Q S + (Q Kᵀ ⊙ M) u
    S ← LayerNorm_Dv(S + Kᵀ u)          (x − mean) / sqrt(var + EPS) per row of S, no affine parameters

Interpretation: "layernorm" over the value features, the axis the read q S produces (each row is what one key
direction retrieves), no learnable gain so the state keeps no extra parameters; EPS = 1e-5. The normalisation
happens once per chunk, so outputs depend on the chunk size (CHUNK_DEPENDENT).
"""

from deltanet.variants._common import corrected_values, layer_norm, linear_attention, read, write

MIXER = "delta"
CHUNK_DEPENDENT = True
USES_KERNEL = False
EPS = 1e-5


def loop_body(chunk, carry, params):
    S = carry["S"]
    u = corrected_values(chunk, S)
    return read(chunk, S, linear_attention(chunk), u), {**carry, "S": layer_norm(write(chunk, S, u), EPS)}
