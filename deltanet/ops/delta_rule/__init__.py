"""Delta rule (DeltaNet): naive reference ops and the Triton chunk op (imported lazily)."""

from deltanet.ops.delta_rule.naive import baseline_loop_body, delta_rule_chunkwise, delta_rule_recurrence

__all__ = ["chunk_delta_rule", "baseline_loop_body", "delta_rule_chunkwise", "delta_rule_recurrence"]


def __getattr__(name: str):
    # The Triton kernels are imported on first use, not with the package: triton picks interpreter vs compiler
    # when a kernel is decorated, and importing the package must not freeze that choice (see ops/kernels/launch.py).
    if name == "chunk_delta_rule":
        from deltanet.ops.delta_rule.chunk import chunk_delta_rule

        return chunk_delta_rule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
