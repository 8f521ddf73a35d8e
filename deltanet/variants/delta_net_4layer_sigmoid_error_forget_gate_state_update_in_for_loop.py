"""At the end of each chunk the old state is scaled by a sigmoid forget gate driven by the chunk's error.

Change vs the baseline loop: a per-head, per-chunk forget gate f ∈ (0, 1), computed from the mean RMS of the
chunk's errors (real rows only), multiplies the carried state before the chunk's write is added; the chunk's
output is the baseline's::

    u = U − W S;    O = Q S + (Q Kᵀ ⊙ M) u
    e = mean over real rows r of rms(u_r);    f = σ(a_h · e + b_h)
    S ← f · S + Kᵀ u

Interpretation: "error forget gate" = forget the old memory more when it mispredicts the chunk (the gate's input
is the error, its output scales S, as an LSTM forget gate); learnable a_h init GATE_SCALE_INIT = −1 (large errors
→ more forgetting), b_h init GATE_BIAS_INIT = 3 (f ≈ 0.95 when the memory predicts well). One gate per chunk, so
CHUNK_DEPENDENT.
"""

import torch

from deltanet.variants._common import (
    LoopParams,
    corrected_values,
    linear_attention,
    per_head,
    read,
    row_rms,
    valid_rows,
)

MIXER = "delta"
CHUNK_DEPENDENT = True
USES_KERNEL = False
GATE_SCALE_INIT = -1.0
GATE_BIAS_INIT = 3.0


def make_params(num_heads, head_k_dim, head_v_dim):
    return LoopParams(
        gate_scale=torch.full((num_heads,), GATE_SCALE_INIT), gate_bias=torch.full((num_heads,), GATE_BIAS_INIT)
    )


def loop_body(chunk, carry, params):
    S = carry["S"]
    u = corrected_values(chunk, S)
    valid = valid_rows(chunk)
    err = (row_rms(u) * valid).sum(dim=-2, keepdim=True) / valid.sum()  # [B, H, 1, 1]
    forget = torch.sigmoid(per_head(params.gate_scale) * err + per_head(params.gate_bias))
    S_new = forget * S + chunk.k.transpose(-1, -2) @ u
    return read(chunk, S, linear_attention(chunk), u), {**carry, "S": S_new}
