"""Intra-chunk attention becomes a causal softmax of scaled cosine similarities cos(q, k).

Change vs the baseline loop: the intra-chunk weights over the errors are a row softmax of s_h · cos(q_r, k_c) over
the causal columns of the chunk; state read and write unchanged::

    u = U − W S
    A = softmax_causal(s_h · cos(Q, K)),   s_h = exp(min(λ_h, log COSINE_LOGIT_SCALE_MAX))
    O = Q S + A u,    S ← S + Kᵀ u

Interpretation: cosine logits are bounded in [−1, 1], so they need a temperature; it is learned per head as in
Swin-V2 cosine attention (log-scale λ_h, init log COSINE_LOGIT_SCALE_INIT = log 10, i.e. temperature 0.1, clamped at
COSINE_LOGIT_SCALE_MAX = 100; COSINE_EPS = 1e-6 in the norms). Constants live in ``_common`` because
cosine_softmax_attention_error_gated_update shares them. Chunk-normalised softmax, so CHUNK_DEPENDENT.
"""

from deltanet.variants._common import (  # noqa: F401  (constants re-exported for reference)
    COSINE_EPS,
    COSINE_LOGIT_SCALE_INIT,
    COSINE_LOGIT_SCALE_MAX,
    corrected_values,
    cosine_softmax,
    make_cosine_params,
    read,
    write,
)

MIXER = "delta"
CHUNK_DEPENDENT = True
USES_KERNEL = False


def make_params(num_heads, head_k_dim, head_v_dim):
    return make_cosine_params(num_heads)


def loop_body(chunk, carry, params):
    S = carry["S"]
    u = corrected_values(chunk, S)
    return read(chunk, S, cosine_softmax(chunk, params.log_scale), u), {**carry, "S": write(chunk, S, u)}
