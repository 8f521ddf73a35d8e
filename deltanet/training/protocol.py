"""MAD's training protocol rules (``docs/mad-benchmark.md`` §7) as small pure functions.

- Reported metrics come from the epoch with the **lowest test perplexity** (Lightning ``ModelCheckpoint``, mode
  min: a later epoch replaces the best only when strictly lower, so ties keep the earlier; NaN never wins).
- Training **stops as soon as test accuracy ≥ stop_accuracy** (0.999 in MAD).
- A non-finite training loss ends the run as ``diverged`` (our addition: MAD would train on with NaN weights, and
  its lowest-perplexity checkpoint would still be the last finite epoch — the metrics we report).
"""

from __future__ import annotations

import math
from typing import Sequence


def best_epoch_index(test_ppls: Sequence[float]) -> int | None:
    """Index of the epoch with the lowest test perplexity (first of ties), or None if none is a number.

    Perplexity +inf is a number here (a valid but terrible epoch); NaN is not.
    """
    best = None
    for i, ppl in enumerate(test_ppls):
        if math.isnan(ppl):
            continue
        if best is None or ppl < test_ppls[best]:
            best = i
    return best


def is_better(ppl: float, best_ppl: float | None) -> bool:
    """True when an epoch with test perplexity ``ppl`` replaces the best so far (``best_ppl``; None = no best yet)."""
    if math.isnan(ppl):
        return False
    return best_ppl is None or ppl < best_ppl


def should_stop_early(test_acc: float, stop_accuracy: float) -> bool:
    """MAD early stop: test accuracy reached the threshold."""
    return test_acc >= stop_accuracy


def is_diverged(train_loss: float) -> bool:
    return not math.isfinite(train_loss)
