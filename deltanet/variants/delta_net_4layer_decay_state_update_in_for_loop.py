"""The state decays by a fixed factor per token: S_t = λ (I − β_t k_tᵀ k_t) S_{t−1} + β_t k_tᵀ v_t.

Change vs the baseline loop: a constant forgetting factor DECAY = λ per token, i.e. the gated delta rule with the
fixed log-decay g_t = log λ (padding rows: g = 0). The loop recomputes the chunk's WY transform with that decay
(W = T (K_β ⊙ e^G), Γ_ij = λ^{i−j}) and runs the gated loop step::

    G_r = (r + 1) log λ within the chunk;   u = U − W S
    O = (Q ⊙ e^G) S + (Q Kᵀ ⊙ Γ) u
    S ← λ^C S + (K ⊙ e^{G_last − G})ᵀ u

Interpretation: decay per *token*, not per chunk (S ← λ S once per chunk would make the forgetting rate depend on
the chunk size); fixed, not learned (the learned, data-dependent decay is gated_delta_net_4layer). DECAY = 0.99:
half-life ≈ 69 tokens, about half a MAD sequence. Exact token recurrence, so not CHUNK_DEPENDENT; the fused kernel
gets the raw inputs without this decay, so USES_KERNEL is False.
"""

import math

from deltanet.ops.gated_delta_rule import gated_loop_body
from deltanet.variants._common import recompute_wy, valid_rows

MIXER = "delta"
CHUNK_DEPENDENT = False
USES_KERNEL = False
DECAY = 0.99


def loop_body(chunk, carry, params):
    g = math.log(DECAY) * valid_rows(chunk)[:, 0].expand_as(chunk.beta)
    return gated_loop_body(recompute_wy(chunk, g_cum=g.cumsum(-1)), carry, None)
