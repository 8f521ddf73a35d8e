"""Each token writes only the TOPK largest-magnitude features of its prediction error (sparse error update).

Change vs the baseline loop: in every error row u_r only the TOPK entries of largest |u_r,j| (over the Dv value
features) are kept, the rest are zeroed; the sparse errors are what is written to S and read within the chunk::

    u = U − W S
    ũ_r,j = u_r,j · [ |u_r,j| is among the TOPK largest of |u_r| ]
    O = Q S + (Q Kᵀ ⊙ M) ũ,    S ← S + Kᵀ ũ

Interpretation: "topk" over the features of each token's error (a top-k sparsified update, as in sparse gradient
methods), not over tokens: every token still writes, so associative recall keeps working. TOPK = 8 (a quarter of
the default head dim 32). Rows of u ignore the sparsification of earlier rows of the same chunk, so the result
depends on the chunk size (CHUNK_DEPENDENT).
"""

from deltanet.variants._common import corrected_values, linear_attention, read, topk_mask, write

MIXER = "delta"
CHUNK_DEPENDENT = True
USES_KERNEL = False
TOPK = 8


def loop_body(chunk, carry, params):
    S = carry["S"]
    u = corrected_values(chunk, S)
    u = u * topk_mask(u.abs(), TOPK)
    return read(chunk, S, linear_attention(chunk), u), {**carry, "S": write(chunk, S, u)}
