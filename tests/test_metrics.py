"""TaskMetrics against values computed by hand (torchmetrics' macro and micro definitions)."""

import math

import pytest
import torch

from deltanet.metrics import TaskMetrics


def logits_for(preds, vocab_size=4, confidence=10.0):
    """Logits whose argmax is ``preds`` ([B, T] ints)."""
    return torch.nn.functional.one_hot(torch.tensor(preds), vocab_size).float() * confidence


def test_macro_differs_from_micro_as_torchmetrics_defines():
    # class 0: 2 of 3 right; class 1: 1 of 1; classes 2 and 3 neither targeted nor predicted -> dropped.
    m = TaskMetrics(vocab_size=4)
    m.update(logits_for([[0, 0, 1, 1]]), torch.tensor([[0, 0, 0, 1]]))
    out = m.compute()
    assert out["acc_micro"] == pytest.approx(3 / 4)
    assert out["acc"] == pytest.approx((2 / 3 + 1) / 2)


def test_class_only_wrongly_predicted_counts_zero_and_ignored_positions_do_not_count():
    # class 2 is predicted once but never a target: recall 0 counts; the -100 position predicting 3 is dropped.
    m = TaskMetrics(vocab_size=4)
    m.update(logits_for([[0, 2, 1, 1, 3]]), torch.tensor([[0, 0, 1, 1, -100]]))
    out = m.compute()
    assert out["acc"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert out["acc_micro"] == pytest.approx(3 / 4)


def test_epoch_acc_is_batch_size_weighted_mean_of_batch_values():
    m = TaskMetrics(vocab_size=4)
    m.update(logits_for([[0, 0, 1, 1]]), torch.tensor([[0, 0, 0, 1]]))  # 1 row, macro 5/6
    m.update(logits_for([[2, 2], [2, 2]]), torch.tensor([[2, 2], [3, -100]]))  # 2 rows, macro (1 + 0)/2
    out = m.compute()
    assert out["acc"] == pytest.approx((5 / 6 * 1 + 1 / 2 * 2) / 3)
    assert out["acc_micro"] == pytest.approx((3 + 2) / (4 + 3))


def test_perplexity_and_loss_over_scored_tokens():
    # uniform logits over 4 classes: cross-entropy log 4 at every scored token, perplexity 4.
    m = TaskMetrics(vocab_size=4)
    m.update(torch.zeros(2, 3, 4), torch.tensor([[0, -100, 1], [-100, -100, 3]]))
    out = m.compute()
    assert out["loss"] == pytest.approx(math.log(4))
    assert out["ppl"] == pytest.approx(4.0)


def test_perfect_model_scores_one():
    targets = torch.tensor([[3, -100, 1, 0]])
    m = TaskMetrics(vocab_size=4)
    m.update(logits_for([[3, 2, 1, 0]]), targets)
    out = m.compute()
    assert out["acc"] == out["acc_micro"] == pytest.approx(1.0)


def test_compute_before_update_is_an_error():
    with pytest.raises(ValueError, match="before any update"):
        TaskMetrics(vocab_size=4).compute()


def test_one_pass_measures_exactly_the_run_tables_metrics():
    """``deltanet.runs.METRIC_NAMES`` is the one list: a pass computes each, the run table has test_ and train_ of
    each, so a new metric cannot be computed and silently dropped."""
    from deltanet.runs import METRIC_NAMES, RUN_COLUMNS

    m = TaskMetrics(vocab_size=4)
    m.update(logits_for([[0, 1]]), torch.tensor([[0, 1]]))
    assert tuple(m.compute()) == METRIC_NAMES
    assert all(f"{split}_{name}" in RUN_COLUMNS for split in ("test", "train") for name in METRIC_NAMES)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_numbers_as_torchmetrics_bit_for_bit(seed):
    """The written-out definitions (deltanet/metrics.py) give torchmetrics' fp32 values exactly, on random batches
    with unscored positions and classes that are neither targeted nor predicted."""
    from torchmetrics.classification import MulticlassAccuracy
    from torchmetrics.functional.classification import multiclass_accuracy
    from torchmetrics.functional.text import perplexity

    gen, vocab = torch.Generator().manual_seed(seed), 16
    m, micro, acc, ppl, rows = TaskMetrics(vocab_size=vocab), MulticlassAccuracy(vocab, average="micro",
                                                                                 ignore_index=-100), 0.0, 0.0, 0
    for batch in (8, 8, 3):
        logits = torch.randn(batch, 12, vocab, generator=gen) * 3
        targets = torch.randint(0, vocab // 2, (batch, 12), generator=gen)
        targets[torch.rand(batch, 12, generator=gen) < 0.3] = -100
        m.update(logits, targets)
        preds, flat = logits.reshape(-1, vocab).argmax(-1), targets.reshape(-1)
        acc += multiclass_accuracy(preds, flat, vocab, average="macro", ignore_index=-100).double().item() * batch
        ppl += perplexity(logits, targets, ignore_index=-100).double().item() * batch
        micro.update(preds, flat)
        rows += batch
    out = m.compute()
    assert (out["acc"], out["ppl"], out["acc_micro"]) == (acc / rows, ppl / rows, micro.compute().double().item())


def test_an_evaluation_batch_reads_the_host_once_per_member():
    """On a GPU a host read waits for every kernel queued before it. ``update`` may read once (perplexity's
    selection of scored positions, summed in torchmetrics' order); counts by scatter_add read nothing (bincount
    and boolean indexing each read a size). Counted as the ops that need the host, under a TorchDispatchMode."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class HostReads(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func)
            mask = name == "aten.index.Tensor" and any(i is not None and i.dtype == torch.bool for i in args[1])
            if mask or name.split(".")[1] in ("nonzero", "_local_scalar_dense", "bincount", "masked_select"):
                self.ops.append(name)
            return func(*args, **(kwargs or {}))

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 16, 32, generator=generator)
    targets = torch.randint(0, 32, (4, 16), generator=generator)
    targets[:, :8] = -100
    metrics = TaskMetrics(32)
    with HostReads() as reads:
        metrics.update(logits, targets)
    assert len(reads.ops) == 1, reads.ops
