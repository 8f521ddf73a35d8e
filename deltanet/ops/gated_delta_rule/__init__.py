"""Gated delta rule (Gated DeltaNet): naive reference ops and the Triton chunk op (imported lazily)."""

from deltanet.ops.gated_delta_rule.naive import gated_delta_rule_chunkwise, gated_delta_rule_recurrence, gated_loop_body

__all__ = ["chunk_gated_delta_rule", "gated_delta_rule_chunkwise", "gated_delta_rule_recurrence", "gated_loop_body"]


def __getattr__(name: str):
    # The Triton kernels are imported on first use, not with the package: triton picks interpreter vs compiler
    # when a kernel is decorated, and importing the package must not freeze that choice (see ops/kernels/launch.py).
    if name == "chunk_gated_delta_rule":
        from deltanet.ops.gated_delta_rule.chunk import chunk_gated_delta_rule

        return chunk_gated_delta_rule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
