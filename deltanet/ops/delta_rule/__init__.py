"""Delta rule (DeltaNet): naive reference ops."""

from deltanet.ops.delta_rule.naive import baseline_loop_body, delta_rule_chunkwise, delta_rule_recurrence

__all__ = ["baseline_loop_body", "delta_rule_chunkwise", "delta_rule_recurrence"]
