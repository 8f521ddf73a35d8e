"""A parameter-free layer norm over the features of the prediction error u before output and state update (proposed).

Change vs the baseline loop (proposal in the reference analysis: ``u_i = F.layer_norm(u_i, (d_v,))`` right after
u_i is computed)::

    u = U − W S;    ũ_r = (u_r − mean(u_r)) / sqrt(var(u_r) + EPS)      per row r, over the Dv features
    O = Q S + (Q Kᵀ ⊙ M) ũ,    S ← S + Kᵀ ũ

Interpretation: exactly the proposal, no affine parameters; EPS = 1e-5 (F.layer_norm's default). A zero row
(padding) stays zero. Rows of u ignore the normalisation of earlier rows of the same chunk, so the result depends
on the chunk size (CHUNK_DEPENDENT).
"""

from deltanet.variants._common import corrected_values, layer_norm, linear_attention, read, write

MIXER = "delta"
CHUNK_DEPENDENT = True
USES_KERNEL = False
EPS = 1e-5


def loop_body(chunk, carry, params):
    S = carry["S"]
    u = layer_norm(corrected_values(chunk, S), EPS)
    return read(chunk, S, linear_attention(chunk), u), {**carry, "S": write(chunk, S, u)}
