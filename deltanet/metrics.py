"""MAD's evaluation metrics over one pass of a data loader (mad-lab mad/metrics.py, mad/model/pl_model_wrapper.py).

The torchmetrics 1.9 definitions MAD uses, written out in the same fp32 ops (``tests/test_metrics.py`` checks them
against torchmetrics bit for bit): importing torchmetrics loads matplotlib (``torchmetrics.utilities.plot``), about
0.5 s of CPU in every train job (issue #35).

MAD logs each metric's per-batch value and Lightning reports the epoch value as the batch-size-weighted mean of
those (batch size = rows). So:
- ``acc``: torchmetrics macro ``MulticlassAccuracy(num_classes=vocab, ignore_index=-100)`` per batch, weighted
  mean over batches. Macro averages per-class recall over the classes present in the batch as a target or a
  prediction; a class only ever predicted wrongly counts 0; classes with neither are dropped.
- ``ppl``: torchmetrics ``Perplexity(ignore_index=-100)`` per batch, weighted mean over batches (the value MAD's
  checkpoint selection monitors).
- ``acc_micro``: plain token accuracy pooled over every scored token of the pass.
- ``loss``: cross-entropy averaged over every scored token of the pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deltanet.runs import METRIC_NAMES
from deltanet.tasks.generator_kit import IGNORE


class TaskMetrics:
    """Accumulates one evaluation pass; ``update`` per batch, ``compute`` at the end."""

    def __init__(self, vocab_size: int, device: torch.device | str = "cpu"):
        self.vocab_size = vocab_size
        zero = torch.zeros((), dtype=torch.float64, device=device)
        self._acc_sum, self._ppl_sum, self._loss_sum = zero.clone(), zero.clone(), zero.clone()
        self._rows = 0
        self._correct, self._tokens = (torch.zeros((), dtype=torch.int64, device=device) for _ in range(2))

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """``logits [B, T, V]``, ``targets [B, T]`` with -100 where a position is not scored."""
        logits = logits.detach().float()
        flat_logits, flat_targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
        scored = flat_targets != IGNORE
        preds, labels = flat_logits.argmax(dim=-1), flat_targets.where(scored, 0)
        hits = scored & (preds == flat_targets)
        rows = targets.shape[0]
        self._acc_sum += _macro_accuracy(preds, labels, scored, hits, self.vocab_size).double() * rows
        self._ppl_sum += _perplexity(flat_logits, labels, scored).double() * rows
        self._rows += rows
        self._correct += hits.sum()
        self._loss_sum += F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE, reduction="sum").double()
        self._tokens += scored.sum()

    def compute(self) -> dict[str, float]:
        """The pass's value of each of ``deltanet.runs.METRIC_NAMES`` (the run table's columns), read with one
        host transfer."""
        if self._rows == 0:
            raise ValueError("TaskMetrics.compute() called before any update(); nothing was evaluated")
        micro = _safe_divide(self._correct, self._tokens).double()
        values = torch.stack([self._acc_sum / self._rows, micro, self._ppl_sum / self._rows,
                              self._loss_sum / self._tokens])  # fmt: skip
        return dict(zip(METRIC_NAMES, values.tolist(), strict=True))


def _safe_divide(num: torch.Tensor, denom: torch.Tensor) -> torch.Tensor:
    """``num / denom`` in fp32, 0 where ``denom`` is 0 (torchmetrics ``utilities/compute.py`` ``_safe_divide``)."""
    num, denom = num.float(), denom.float()
    return torch.where(denom != 0, num / denom, torch.zeros((), device=num.device))


def _macro_accuracy(preds: torch.Tensor, labels: torch.Tensor, scored: torch.Tensor, hits: torch.Tensor,
                    vocab_size: int) -> torch.Tensor:  # fmt: skip
    """torchmetrics ``multiclass_accuracy(average="macro")`` of the scored positions: per-class recall, averaged
    over the classes that are a target or a prediction (``_adjust_weights_safe_divide``). Counts by ``scatter_add``
    over fixed shapes: no host read (``bincount`` and boolean indexing read sizes on the host, a sync on a GPU)."""
    def count(index: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        return torch.zeros(vocab_size, device=index.device).scatter_add_(0, index, where.float())

    tp, support, predicted = count(labels, hits), count(labels, scored), count(preds, scored)
    weights = ((support + predicted - tp) != 0).float()  # tp + fn + fp == 0: the class is dropped
    return _safe_divide(weights * _safe_divide(tp, support), weights.sum(-1, keepdim=True)).sum(-1)


def _perplexity(flat_logits: torch.Tensor, labels: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """torchmetrics ``perplexity``: exp of the mean of -log(softmax probability of the target), scored positions
    (the pass's one host read: the selection of the scored positions, summed in torchmetrics' order)."""
    probs = torch.softmax(flat_logits, dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)
    return torch.exp(-probs[scored].log().sum() / scored.sum())
