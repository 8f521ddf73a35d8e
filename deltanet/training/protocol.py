"""MAD's training protocol (``docs/mad-benchmark.md`` §7): what one run decides after each epoch, in one place.

- Reported metrics come from the epoch with the **lowest test perplexity** (Lightning ``ModelCheckpoint``, mode
  min: a later epoch replaces the best only when strictly lower, so ties keep the earlier; NaN never wins).
- Training **stops as soon as test accuracy ≥ stop_accuracy** (0.999 in MAD), or after ``max_epochs``.
- A non-finite training loss ends the run as ``diverged`` (our addition: MAD would train on with NaN weights, and
  its lowest-perplexity checkpoint would still be the last finite epoch — the metrics we report).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from deltanet.runs import DIVERGED, EARLY_STOPPED, MAX_EPOCHS


@dataclass(frozen=True)
class Verdict:
    """A run's epoch judged: whether it is the new best epoch, and why the run stops now (None: it goes on)."""

    best: bool
    stop_reason: str | None


def judge_epoch(epoch: int, train_loss: float, test: dict, best_ppl: float | None, max_epochs: int,
                stop_accuracy: float) -> Verdict:  # fmt: skip
    """Epoch ``epoch`` (1-based) of a run whose best test perplexity so far is ``best_ppl`` (None: no best yet);
    ``test`` holds the epoch's test ``acc`` and ``ppl`` (not read when the run diverged)."""
    if is_diverged(train_loss):
        return Verdict(False, DIVERGED)
    best = is_better(test["ppl"], best_ppl)
    if should_stop_early(test["acc"], stop_accuracy):
        return Verdict(best, EARLY_STOPPED)
    return Verdict(best, MAX_EPOCHS if epoch >= max_epochs else None)


def is_better(ppl: float, best_ppl: float | None) -> bool:
    """True when an epoch with test perplexity ``ppl`` replaces the best so far (``best_ppl``; None = no best yet).
    Perplexity +inf is a number here (a valid but terrible epoch); NaN is not."""
    if math.isnan(ppl):
        return False
    return best_ppl is None or ppl < best_ppl


def best_epoch_index(test_ppls: Sequence[float]) -> int | None:
    """Index of the epoch that :func:`is_better` keeps as the best over ``test_ppls``, or None if none is a number."""
    best = None
    for i, ppl in enumerate(test_ppls):
        if is_better(ppl, None if best is None else test_ppls[best]):
            best = i
    return best


def should_stop_early(test_acc: float, stop_accuracy: float) -> bool:
    """MAD early stop: test accuracy reached the threshold."""
    return test_acc >= stop_accuracy


def is_diverged(train_loss: float) -> bool:
    return not math.isfinite(train_loss)
