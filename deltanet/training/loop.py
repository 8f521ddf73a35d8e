"""One training run under the MAD protocol, resumable from a per-epoch checkpoint.

AdamW (torch defaults: betas (0.9, 0.999), eps 1e-8, weight decay on every parameter), CosineAnnealingLR
(T_max = max_epochs, eta_min = min_lr) stepped once per epoch, a shuffled training set (the last batch may be
short), cross-entropy with ignore_index -100, evaluation on the test set after every epoch, early stop at
``stop_accuracy``, and the reported metrics of the epoch with the lowest test perplexity (its train metrics are
evaluated on the saved best model at the end). Evaluations run in batches of ``optim.eval_batch_size`` (default:
``batch_size``): MAD's accuracy is the mean of per-batch macro accuracies over its loader's batches of 128, so a
scale that trains on smaller batches still scores in batches of 128. Precision (``optim.precision``): ``auto`` =
bf16 autocast on CUDA (MAD trains bf16-mixed) and fp32 elsewhere; ``bf16`` forces the GPU path's autocast on any
device (CPU tests of the GPU code path); ``fp32`` turns autocast off. ``optim.max_steps_per_epoch`` /
``max_eval_batches`` (the smoke scale) cap the batches of each epoch and of each evaluation.

Determinism: every run seeds python, numpy and torch with its seed before building the model, and shuffles with
its own ``torch.Generator`` seeded the same, so a run's result does not depend on the runs before it; the
checkpoint stores every RNG state, so a resumed run continues bit-for-bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from deltanet.io import atomic_path
from deltanet.metrics import TaskMetrics
from deltanet.model import ModelConfig, build_model, count_parameters
from deltanet.training import protocol
from deltanet.training.provenance import peak_memory_mb, reset_peak_memory

CHECKPOINT_FORMAT = 1
METRIC_KEYS = ("acc", "acc_micro", "ppl", "loss")
NAN_METRICS = {k: math.nan for k in METRIC_KEYS}


@dataclass
class TensorData:
    """A setting's train/test arrays as tensors on the training device."""

    train_inputs: torch.Tensor
    train_targets: torch.Tensor
    test_inputs: torch.Tensor
    test_targets: torch.Tensor

    @classmethod
    def from_datasets(cls, ds, device: torch.device) -> "TensorData":
        return cls(*(torch.as_tensor(np.asarray(getattr(ds, f.name)), dtype=torch.long).to(device)
                     for f in dataclasses.fields(cls)))  # fmt: skip


@dataclass
class RunPlan:
    """Everything one run needs; ``index`` is 1-based in job order."""

    index: int
    total: int
    label: str  # the setting, for progress lines
    vocab_size: int
    lr: float
    weight_decay: float
    seed: int
    model_kwargs: dict
    autoencoder: bool
    optim: dict  # the scale's optim section
    device: torch.device


@dataclass
class RunState:
    """What a checkpoint holds besides model/optimiser/scheduler/RNG states."""

    epoch: int = 0  # epochs completed
    history: list = field(default_factory=list)  # per epoch: train_loss + test metrics
    best_epoch: int = 0  # 1-based; 0 = no finite epoch yet
    best_metrics: dict = field(default_factory=lambda: dict(NAN_METRICS))
    best_model: dict | None = None
    stop_reason: str | None = None
    wall_seconds: float = 0.0
    train_seconds: float = 0.0
    train_tokens: int = 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # CPU and every CUDA device


PRECISIONS = {"bf16": torch.bfloat16, "fp32": None}


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """``optim.precision`` → the autocast dtype on ``device`` (None: no autocast, plain fp32)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if precision not in PRECISIONS:
        raise ValueError(f"optim.precision must be one of auto, {', '.join(PRECISIONS)}; got {precision!r}")
    return PRECISIONS[precision]


def precision_context(device_type: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """The autocast the model runs under: ``torch.autocast(device_type, dtype)``, or none for ``dtype=None``.

    The same context on CPU and CUDA, so CPU tests take the GPU path (the ops keep their own fp32 loop inside it).
    """
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type, dtype=dtype)


@torch.no_grad()
def evaluate(
    model, inputs, targets, batch_size: int, vocab_size: int, device: torch.device, amp: torch.dtype | None = None,
    max_batches: int | None = None,
) -> dict:  # fmt: skip
    """TaskMetrics over the set in order, in batches of ``batch_size`` (MAD's accuracy is a per-batch mean);
    ``amp`` the autocast dtype, ``max_batches`` caps the batches (the smoke scale)."""
    was_training = model.training
    model.eval()
    metrics = TaskMetrics(vocab_size, device)
    starts = range(0, len(inputs), batch_size)
    for start in starts[:max_batches]:
        with precision_context(device.type, amp):
            logits = model(inputs[start : start + batch_size])
        metrics.update(logits.float(), targets[start : start + batch_size])
    model.train(was_training)
    return {k: float(v) for k, v in metrics.compute().items() if k in METRIC_KEYS}


def _rng_states(shuffle: torch.Generator, device: torch.device) -> dict:
    states = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "shuffle": shuffle.get_state(),
    }
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(states: dict, shuffle: torch.Generator, device: torch.device) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    shuffle.set_state(states["shuffle"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


def save_checkpoint(path: Path, model, optimizer, scheduler, shuffle, state: RunState, device) -> None:
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": _rng_states(shuffle, device),
        "state": dataclasses.asdict(state),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, model, optimizer, scheduler, shuffle, device) -> RunState:
    # our own file (it holds numpy RNG state, hence weights_only=False); loaded to CPU because RNG states must stay
    # CPU tensors; load_state_dict moves model and optimiser state onto the parameters' device
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {payload.get('format')}, expected {CHECKPOINT_FORMAT}")
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    _set_rng_states(payload["rng"], shuffle, device)
    return RunState(**payload["state"])


LossHook = Callable[[int, int, torch.Tensor], torch.Tensor]


def train_step(model, optimizer, x: torch.Tensor, y: torch.Tensor, amp: torch.dtype | None,
               loss_hook: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
    """One optimiser step on a batch: forward under :func:`precision_context`, cross-entropy in fp32 over the
    targets ``y`` (``-100`` = not scored), backward, AdamW step. Returns the detached loss."""
    with precision_context(x.device.type, amp):
        logits = model(x)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100)
    if loss_hook is not None:
        loss = loss_hook(loss)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def train_run(plan: RunPlan, data: TensorData, ckpt: Path, on_epoch: Callable[[RunPlan, RunState, dict], None],
              loss_hook: LossHook | None = None) -> dict:  # fmt: skip
    """Train (or resume) one run; return its metric/timing columns.

    ``on_epoch`` is called after each epoch's checkpoint is on disk (progress line; it may raise to stop the job).
    ``loss_hook(run index, epoch, loss) -> loss`` is a test seam (e.g. a NaN loss to exercise divergence).
    """
    device, opt_cfg = plan.device, plan.optim
    max_epochs, batch_size = opt_cfg["max_epochs"], opt_cfg["batch_size"]
    amp = autocast_dtype(opt_cfg.get("precision", "auto"), device)
    max_steps, max_eval = opt_cfg.get("max_steps_per_epoch"), opt_cfg.get("max_eval_batches")
    eval_batch = opt_cfg.get("eval_batch_size", batch_size)
    seq_len = data.train_inputs.shape[1]
    started = time.perf_counter()

    seed_everything(plan.seed)
    cfg = ModelConfig(vocab_size=plan.vocab_size, **plan.model_kwargs, max_length=seq_len)
    model = build_model(cfg, autoencoder=plan.autoencoder).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=plan.lr, weight_decay=plan.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs, eta_min=opt_cfg["min_lr"])
    shuffle = torch.Generator().manual_seed(plan.seed)
    state = RunState()
    if ckpt.exists():
        try:
            state = load_checkpoint(ckpt, model, optimizer, scheduler, shuffle, device)
        except Exception as err:  # unreadable or from an older format: this run starts over, nothing else is lost
            print(f"  run {plan.index}: checkpoint {ckpt} unusable ({type(err).__name__}: {err}); restarting run",
                  flush=True)  # fmt: skip
            ckpt.unlink()
            return train_run(plan, data, ckpt, on_epoch, loss_hook)
    prior_wall = state.wall_seconds  # wall time of earlier (killed) invocations of this run
    reset_peak_memory(device)
    n_train = len(data.train_inputs)
    model.train()

    while state.stop_reason is None and state.epoch < max_epochs:
        epoch_start = time.perf_counter()
        epoch = state.epoch + 1
        perm = torch.randperm(n_train, generator=shuffle).to(device)
        loss_sum = torch.zeros((), device=device)
        steps = 0
        hook = None if loss_hook is None else lambda loss: loss_hook(plan.index, epoch, loss)
        for start in range(0, n_train, batch_size)[:max_steps]:
            idx = perm[start : start + batch_size]
            loss_sum += train_step(model, optimizer, data.train_inputs[idx], data.train_targets[idx], amp, hook)
            steps += 1
        scheduler.step()
        train_loss = (loss_sum / steps).item()  # one device sync per epoch
        train_time = time.perf_counter() - epoch_start
        state.train_seconds += train_time
        state.train_tokens += min(n_train, steps * batch_size) * seq_len
        state.epoch = epoch

        if protocol.is_diverged(train_loss):
            test = dict(NAN_METRICS)
            state.stop_reason = "diverged"
        else:
            test = evaluate(model, data.test_inputs, data.test_targets, eval_batch, plan.vocab_size, device, amp,
                            max_eval)  # fmt: skip
            if protocol.is_better(test["ppl"], state.best_metrics["ppl"] if state.best_epoch else None):
                state.best_epoch, state.best_metrics = epoch, test
                state.best_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if protocol.should_stop_early(test["acc"], opt_cfg["stop_accuracy"]):
                state.stop_reason = "early_stopped"
            elif epoch >= max_epochs:
                state.stop_reason = "max_epochs"
        state.history.append({"epoch": epoch, "train_loss": train_loss, **{f"test_{k}": v for k, v in test.items()}})
        state.wall_seconds = prior_wall + time.perf_counter() - started
        save_checkpoint(ckpt, model, optimizer, scheduler, shuffle, state, device)
        on_epoch(plan, state, {"train_loss": train_loss, "steps_per_second": steps / train_time, **test})

    if state.stop_reason is None:  # resumed a checkpoint of a run that was already complete
        state.stop_reason = "max_epochs"
    if state.best_model is not None:
        model.load_state_dict(state.best_model)
        train = evaluate(model, data.train_inputs, data.train_targets, eval_batch, plan.vocab_size, device, amp,
                         max_eval)  # fmt: skip
    else:
        train = dict(NAN_METRICS)
    state.wall_seconds = prior_wall + time.perf_counter() - started
    return {
        **{f"test_{k}": v for k, v in state.best_metrics.items()},
        **{f"train_{k}": v for k, v in train.items()},
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "stop_reason": state.stop_reason,
        "wall_seconds": state.wall_seconds,
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "tokens_per_second": state.train_tokens / state.train_seconds if state.train_seconds else math.nan,
        "peak_memory_mb": peak_memory_mb(device),
        "num_parameters": count_parameters(model),
    }
