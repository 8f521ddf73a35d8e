"""Keys are L2-normalised inside the loop (and the chunk's WY transform recomputed), so every write is a projection.

Change vs the baseline loop: k ← k / (‖k‖ + EPS) per token, and W, U are recomputed from the normalised keys so the
loop stays the exact delta rule S_t = (I − β_t k̂_tᵀ k̂_t) S_{t−1} + β_t k̂_tᵀ v_t (a contraction for β ∈ (0, 1]
only when ‖k̂‖ = 1)::

    k̂ = k / (‖k‖₂ + EPS);   T = (I + strict_lower(K̂_β K̂ᵀ))⁻¹,  W = T K̂_β,  U = T V_β
    u = U − W S;    O = Q S + (Q K̂ᵀ ⊙ M) u;    S ← S + K̂ᵀ u

Interpretation: normalise the keys only (not q), per token, with EPS = 1e-6. Note the MAD mixer already
L2-normalises q and k (fla's default), so *in the model* this variant equals the baseline up to rounding — a
control; it matters when the op is fed unnormalised keys. Per-token, exact recurrence: not CHUNK_DEPENDENT. The
fused kernel receives the mixer's keys without this step, so USES_KERNEL is False (conservatively).
"""

from deltanet.ops.delta_rule import baseline_loop_body
from deltanet.variants._common import l2_normalize, recompute_wy

MIXER = "delta"
CHUNK_DEPENDENT = False
USES_KERNEL = False
EPS = 1e-6


def loop_body(chunk, carry, params):
    return baseline_loop_body(recompute_wy(chunk, k=l2_normalize(chunk.k, EPS)), carry, params)
