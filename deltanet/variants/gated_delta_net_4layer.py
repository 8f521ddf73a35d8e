"""Baseline Gated DeltaNet: the chunkwise gated delta-rule loop (per-step decay e^{g_t}).

Per chunk i, with G the within-chunk cumulative log decay and Γ_ij = e^{G_i − G_j} on/below the diagonal
(fla ``fla/ops/gated_delta_rule/naive.py``, ``naive_chunk_gated_delta_rule``)::

    u_i = U_i − W_i S
    O_i = (Q_i ⊙ e^G) S + (Q_i K_iᵀ ⊙ Γ) u_i
    S   ← e^{G_last} S + (K_i ⊙ e^{G_last − G})ᵀ u_i
"""

from deltanet.ops.gated_delta_rule import gated_loop_body as loop_body

MIXER = "gated"
CHUNK_DEPENDENT = False
USES_KERNEL = True

__all__ = ["loop_body"]
