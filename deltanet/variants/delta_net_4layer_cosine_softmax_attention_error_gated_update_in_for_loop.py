"""Cosine-softmax intra-chunk attention combined with the error-gated write of error_gated_state_update.

Change vs the baseline loop: both changes at once: (1) the intra-chunk weights are cosine_softmax_attention's
causal softmax of s_h · cos(q, k); (2) each row's error is scaled by a learned sigmoid gate of its magnitude before
it is written (and hence before the intra-chunk read of those writes)::

    u = U − W S;   ũ_r = σ(a_h · rms(u_r) + b_h) · u_r
    A = softmax_causal(s_h · cos(Q, K))
    O = Q S + A ũ,    S ← S + Kᵀ ũ

Interpretation and constants: exactly those of the two parent variants (shared in ``_common``): cosine log-scale
init log 10, max 100; gate scale a_h init ERROR_GATE_SCALE_INIT = 0, bias b_h init ERROR_GATE_BIAS_INIT = 3
(σ ≈ 0.95). The gate acts on the chunk's errors and the softmax on the chunk's rows, so CHUNK_DEPENDENT.
"""

from torch import nn

from deltanet.variants._common import (  # noqa: F401  (constants re-exported for reference)
    COSINE_LOGIT_SCALE_INIT,
    COSINE_LOGIT_SCALE_MAX,
    ERROR_GATE_BIAS_INIT,
    ERROR_GATE_SCALE_INIT,
    corrected_values,
    cosine_softmax,
    error_gate,
    make_cosine_params,
    make_error_gate_params,
    read,
    write,
)

MIXER = "delta"
CHUNK_DEPENDENT = True
USES_KERNEL = False


def make_params(num_heads, head_k_dim, head_v_dim):
    return nn.ModuleDict({"cosine": make_cosine_params(num_heads), "gate": make_error_gate_params(num_heads)})


def loop_body(chunk, carry, params):
    S = carry["S"]
    u = error_gate(corrected_values(chunk, S), params["gate"].gate_scale, params["gate"].gate_bias)
    attn = cosine_softmax(chunk, params["cosine"].log_scale)
    return read(chunk, S, attn, u), {**carry, "S": write(chunk, S, u)}
