"""Delta-rule ops: one folder per op (``naive.py`` = the readable reference), shared loop seam in ``common.py``."""

from deltanet.ops.common import Carry, Chunk
from deltanet.ops.delta_rule import baseline_loop_body, delta_rule_chunkwise, delta_rule_recurrence
from deltanet.ops.gated_delta_rule import gated_delta_rule_chunkwise, gated_delta_rule_recurrence, gated_loop_body

__all__ = [
    "Carry",
    "Chunk",
    "baseline_loop_body",
    "delta_rule_chunkwise",
    "delta_rule_recurrence",
    "gated_delta_rule_chunkwise",
    "gated_delta_rule_recurrence",
    "gated_loop_body",
]
