"""Gated delta rule (Gated DeltaNet): naive reference ops."""

from deltanet.ops.gated_delta_rule.naive import gated_delta_rule_chunkwise, gated_delta_rule_recurrence, gated_loop_body

__all__ = ["gated_delta_rule_chunkwise", "gated_delta_rule_recurrence", "gated_loop_body"]
