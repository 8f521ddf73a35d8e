"""MAD's evaluation metrics over one pass of a data loader (mad-lab mad/metrics.py, mad/model/pl_model_wrapper.py).

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
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.functional.classification import multiclass_accuracy
from torchmetrics.functional.text import perplexity

from deltanet.runs import METRIC_NAMES
from deltanet.tasks.generator_kit import IGNORE


class TaskMetrics:
    """Accumulates one evaluation pass; ``update`` per batch, ``compute`` at the end."""

    def __init__(self, vocab_size: int, device: torch.device | str = "cpu"):
        self.vocab_size = vocab_size
        # validate_args=False: the checks read the tensors on the host (torch.unique), a device sync per batch and
        # member; our logits and targets are well-formed by construction
        self._micro = MulticlassAccuracy(num_classes=vocab_size, average="micro", ignore_index=IGNORE,
                                         validate_args=False).to(device)  # fmt: skip
        zero = torch.zeros((), dtype=torch.float64, device=device)
        self._acc_sum, self._ppl_sum, self._loss_sum = zero.clone(), zero.clone(), zero.clone()
        self._rows, self._tokens = 0, zero.clone()

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """``logits [B, T, V]``, ``targets [B, T]`` with -100 where a position is not scored."""
        logits = logits.detach().float()
        flat_logits, flat_targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
        preds = flat_logits.argmax(dim=-1)
        rows = targets.shape[0]
        batch_acc = multiclass_accuracy(preds, flat_targets, num_classes=self.vocab_size, average="macro",
                                        ignore_index=IGNORE, validate_args=False)
        self._acc_sum += batch_acc.double() * rows
        self._ppl_sum += perplexity(logits, targets, ignore_index=IGNORE).double() * rows
        self._rows += rows
        self._micro.update(preds, flat_targets)
        self._loss_sum += F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE, reduction="sum").double()
        self._tokens += (flat_targets != IGNORE).sum()

    def compute(self) -> dict[str, float]:
        """The pass's value of each of ``deltanet.runs.METRIC_NAMES`` (the run table's columns), read with one
        host transfer."""
        if self._rows == 0:
            raise ValueError("TaskMetrics.compute() called before any update(); nothing was evaluated")
        values = torch.stack([self._acc_sum / self._rows, self._micro.compute().double(), self._ppl_sum / self._rows,
                              self._loss_sum / self._tokens])  # fmt: skip
        return dict(zip(METRIC_NAMES, values.tolist(), strict=True))
