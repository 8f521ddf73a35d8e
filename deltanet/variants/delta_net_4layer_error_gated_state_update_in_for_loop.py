"""Each token's write is scaled by a learned sigmoid gate of the size of its prediction error.

Change vs the baseline loop: after u = U − W S, row r (token r's error) is multiplied by a gate computed from its
RMS; the gated errors are what the chunk writes to S, and so also what the intra-chunk attention reads::

    u = U − W S
    g_r = σ(a_h · rms(u_r) + b_h),   rms(u_r) = ‖u_r‖ / √Dv
    ũ = g ⊙ u;    O = Q S + (Q Kᵀ ⊙ M) ũ;    S ← S + Kᵀ ũ

Interpretation: "error gated" = an input (write) gate driven by the error magnitude, per token and head, with
learnable a_h, b_h: init a_h = ERROR_GATE_SCALE_INIT = 0 (training decides whether big errors open or close the
gate) and b_h = ERROR_GATE_BIAS_INIT = 3 (σ(3) ≈ 0.95, near the baseline's full write). Constants live in
``_common`` (shared with cosine_softmax_attention_error_gated_update). The gate sees the chunk's errors u, which
ignore the gating of earlier rows of the same chunk, so the result depends on the chunk size (CHUNK_DEPENDENT;
chunk size 1 would be the exact gated token recurrence).
"""

from deltanet.variants._common import (  # noqa: F401  (constants re-exported for reference)
    ERROR_GATE_BIAS_INIT,
    ERROR_GATE_SCALE_INIT,
    corrected_values,
    error_gate,
    linear_attention,
    make_error_gate_params,
    read,
    write,
)

MIXER = "delta"
CHUNK_DEPENDENT = True
USES_KERNEL = False


def make_params(num_heads, head_k_dim, head_v_dim):
    return make_error_gate_params(num_heads)


def loop_body(chunk, carry, params):
    S = carry["S"]
    u = error_gate(corrected_values(chunk, S), params.gate_scale, params.gate_bias)
    return read(chunk, S, linear_attention(chunk), u), {**carry, "S": write(chunk, S, u)}
