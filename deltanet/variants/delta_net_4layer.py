"""Baseline DeltaNet: the plain chunkwise delta-rule loop.

Per chunk i (fla ``fla/ops/delta_rule/naive.py``, ``delta_rule_chunkwise``)::

    u_i = U_i − W_i S                       # correct the pseudo-values with the carried state
    O_i = Q_i S + (Q_i K_iᵀ ⊙ M) u_i        # inter-chunk read + causal intra-chunk attention (diagonal kept)
    S   ← S + K_iᵀ u_i
"""

from deltanet.ops.delta_rule import baseline_loop_body as loop_body

MIXER = "delta"
CHUNK_DEPENDENT = False
USES_KERNEL = True

__all__ = ["loop_body"]
