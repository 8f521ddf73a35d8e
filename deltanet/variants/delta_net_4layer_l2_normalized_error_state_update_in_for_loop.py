"""Each row of the prediction error u is L2-normalised before the output and the state update (proposed variant).

Change vs the baseline loop (proposal in the reference analysis): every error row keeps its direction and gets
(nearly) unit norm, an adaptive per-token step size 1/(‖u_r‖ + ε)::

    u = U − W S;    ũ_r = u_r / (‖u_r‖₂ + EPS)        per row r, norm over the Dv features
    O = Q S + (Q Kᵀ ⊙ M) ũ,    S ← S + Kᵀ ũ

Interpretation: exactly the proposal (before both the output and the state update); EPS = 1e-6. A zero row
(padding) stays zero. Rows of u ignore the normalisation of earlier rows of the same chunk, so the result depends
on the chunk size (CHUNK_DEPENDENT).
"""

from deltanet.variants._common import corrected_values, l2_normalize, linear_attention, read, write

MIXER = "delta"
CHUNK_DEPENDENT = True
USES_KERNEL = False
EPS = 1e-6


def loop_body(chunk, carry, params):
    S = carry["S"]
    u = l2_normalize(corrected_values(chunk, S), EPS)
    return read(chunk, S, linear_attention(chunk), u), {**carry, "S": write(chunk, S, u)}
