"""Delta-rule ops, laid out like fla: one folder per op (``naive.py`` = the readable reference, ``chunk.py`` = our
Triton kernels), the chunk loop seam in ``chunkwise.py``, the kernels by stage in ``kernels/``, backend choice in
``dispatch.py``, the mixer's short convolution in ``short_conv.py``, and the ops' test harness in ``testing.py``.
The ops take plain tensors and functions: they know nothing of variants or the model."""

from deltanet.ops.chunkwise import Carry, Chunk
from deltanet.ops.delta_rule import baseline_loop_body, delta_rule_chunkwise, delta_rule_recurrence
from deltanet.ops.dispatch import resolve_backend
from deltanet.ops.gated_delta_rule import gated_delta_rule_chunkwise, gated_delta_rule_recurrence, gated_loop_body

__all__ = [
    "Carry",
    "Chunk",
    "baseline_loop_body",
    "chunk_delta_rule",
    "chunk_gated_delta_rule",
    "delta_rule_chunkwise",
    "delta_rule_recurrence",
    "gated_delta_rule_chunkwise",
    "gated_delta_rule_recurrence",
    "gated_loop_body",
    "resolve_backend",
]


def __getattr__(name: str):
    # Triton chunk ops on first use (deltanet/ops/kernels/launch.py says why they are not imported eagerly).
    if name == "chunk_delta_rule":
        from deltanet.ops.delta_rule.chunk import chunk_delta_rule

        return chunk_delta_rule
    if name == "chunk_gated_delta_rule":
        from deltanet.ops.gated_delta_rule.chunk import chunk_gated_delta_rule

        return chunk_gated_delta_rule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
