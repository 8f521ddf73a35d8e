"""GELU is applied to the prediction error u before it is read by the chunk and written to the state.

Change vs the baseline loop: one elementwise non-linearity on the corrected values (the errors)::

    u = GELU(U − W S)                      exact (erf) GELU, elementwise over the Dv features
    O = Q S + (Q Kᵀ ⊙ M) u,    S ← S + Kᵀ u

Interpretation: "prediction error" is u_i = U_i − W_i S (row r = β_r (v_r − k_r S_{r−1})); GELU acts before both the
output and the state update, since the intra-chunk term is the read of the chunk's writes. No constants. Rows of u
ignore the GELU of earlier rows of the same chunk, so the result depends on the chunk size (CHUNK_DEPENDENT).
"""

import torch.nn.functional as F

from deltanet.variants._common import corrected_values, linear_attention, read, write

MIXER = "delta"
CHUNK_DEPENDENT = True
USES_KERNEL = False


def loop_body(chunk, carry, params):
    S = carry["S"]
    u = F.gelu(corrected_values(chunk, S))
    return read(chunk, S, linear_attention(chunk), u), {**carry, "S": write(chunk, S, u)}
