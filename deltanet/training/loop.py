"""Training under the MAD protocol: the runs of one setting trained together as one fused group (a solo run is a
group of one), resumable from a per-epoch checkpoint.

One epoch of :func:`train_group`, top to bottom: the group trains an epoch → evaluates every member on the test set
→ each run judges its epoch (best, early stop, divergence) → runs that stopped get their result and leave the group
→ checkpoint → progress. Runs are named by their index (``RunPlan.index``) everywhere.

Where each rule lives: a member's meaning (its own seed, shuffle, lr, weight decay; members never mix):
``deltanet/training/fused.py``; AdamW with per-member hyper-parameters: ``optim.py``; the cosine schedule:
:func:`cosine_lr`; the protocol's decisions: ``protocol.py``; the metrics: ``deltanet/metrics.py``; CUDA graphs:
``capture.py``; the checkpoint file: ``checkpoint.py``.

Settings read from the scale's ``optim`` section: ``precision`` (``auto`` = bf16 autocast on CUDA, as MAD trains
bf16-mixed, fp32 elsewhere; ``bf16`` forces the GPU path's autocast on any device; ``fp32`` none), ``capture``,
``eval_batch_size`` (default ``batch_size``), and the smoke scale's caps ``max_steps_per_epoch`` /
``max_eval_batches``.

Determinism: a checkpoint holds the active members' parameters, optimiser state and shuffle generators and every
run's record, so a resumed group continues bit for bit on CPU (the model draws no random numbers while training).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import math
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from deltanet.config import check_choice
from deltanet.io import set_aside, signals_held
from deltanet.metrics import TaskMetrics
from deltanet.model import ModelConfig, build_model
from deltanet.runs import DIVERGED, METRIC_NAMES
from deltanet.training.capture import CapturedStep, capture_enabled
from deltanet.training.checkpoint import Checkpoint, LiveMembers, UnusableCheckpoint, read_checkpoint, save_checkpoint
from deltanet.training.fused import FusedModel, member_losses
from deltanet.training.optim import StackedAdamW
from deltanet.training.protocol import Verdict, judge_epoch
from deltanet.training.provenance import peak_memory_mb, reset_peak_memory

NAN_METRICS = {k: math.nan for k in METRIC_NAMES}


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


@dataclass(frozen=True)
class RunPlan:
    """One run (a member of its group); ``index`` is 1-based in job order and names the run everywhere."""

    index: int
    lr: float
    weight_decay: float
    seed: int


@dataclass
class GroupPlan:
    """The runs of one setting trained together, and what they share."""

    runs: list[RunPlan]
    total: int  # runs in the job, for progress lines
    label: str  # the setting
    vocab_size: int
    model_kwargs: dict
    autoencoder: bool
    optim: dict  # the scale's optim section
    device: torch.device

    @property
    def span(self) -> str:
        first, last = self.runs[0].index, self.runs[-1].index
        return f"{first}" if first == last else f"{first}-{last}"


@dataclass(frozen=True)
class EpochStats:
    """What one training epoch of the group did: each run's mean loss, steps, seconds, tokens per member."""

    losses: dict[int, float]
    steps: int
    seconds: float
    tokens: int


@dataclass
class RunState:
    """One run's record; a group checkpoint holds every run's."""

    epoch: int = 0  # epochs completed
    history: list = field(default_factory=list)  # per epoch: train_loss + test metrics
    best_epoch: int = 0  # 1-based; 0 = no finite epoch yet
    best_metrics: dict = field(default_factory=lambda: dict(NAN_METRICS))
    best_model: dict | None = None
    stop_reason: str | None = None
    wall_seconds: float = 0.0
    train_seconds: float = 0.0
    train_tokens: int = 0
    result: dict | None = None  # the row's metric/timing columns, once the run has stopped

    def observe(self, epoch: int, stats: EpochStats, loss: float, test: dict, optim: dict) -> Verdict:
        """Record epoch ``epoch`` (its test metrics NaN if the run diverged) as the protocol judges it."""
        verdict = judge_epoch(epoch, loss, test, self.best_metrics["ppl"] if self.best_epoch else None,
                              optim["max_epochs"], optim["stop_accuracy"])  # fmt: skip
        test = dict(NAN_METRICS) if verdict.stop_reason == DIVERGED else test
        self.epoch, self.stop_reason = epoch, verdict.stop_reason
        self.train_seconds, self.train_tokens = self.train_seconds + stats.seconds, self.train_tokens + stats.tokens
        if verdict.best:
            self.best_epoch, self.best_metrics = epoch, test
        self.history.append({"epoch": epoch, "train_loss": loss, **{f"test_{k}": v for k, v in test.items()}})
        return verdict

    def finish(self, train: dict, **columns) -> None:
        """The row's metric/timing columns: the best epoch's test metrics, ``train`` (its model's train metrics)."""
        self.result = {
            **{f"test_{k}": v for k, v in self.best_metrics.items()},
            **{f"train_{k}": v for k, v in train.items()},
            "best_epoch": self.best_epoch,
            "epochs_run": self.epoch,
            "stop_reason": self.stop_reason,
            "wall_seconds": self.wall_seconds,
            "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "tokens_per_second": self.train_tokens / self.train_seconds if self.train_seconds else math.nan,
            **columns,
        }
        self.best_model = None  # the result holds what the run reports; checkpoints need not carry the weights


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # CPU and every CUDA device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """``optim.precision`` (values: the config schema's) → the autocast dtype on ``device`` (None: plain fp32)."""
    if check_choice("optim", "precision", precision) == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return torch.bfloat16 if precision == "bf16" else None


def precision_context(device_type: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """The autocast the model runs under: ``torch.autocast(device_type, dtype)``, or none for ``dtype=None``.

    The same context on CPU and CUDA, so CPU tests take the GPU path (the ops keep their own fp32 loop inside it).
    Without autocast's weight cache: a captured step must not keep casts made during capture (capture.py).
    """
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype, cache_enabled=False)


def build_members(plan: GroupPlan, runs: list[RunPlan], seq_len: int) -> FusedModel:
    """Every run of ``runs`` built as its solo run would be (its seed, then the model build), stacked into one."""
    cfg = ModelConfig(vocab_size=plan.vocab_size, **plan.model_kwargs, max_length=seq_len)
    models = []
    for run in runs:
        seed_everything(run.seed)
        models.append(build_model(cfg, autoencoder=plan.autoencoder).to(plan.device))
    return FusedModel.stack(models)


def cosine_lr(lr: float, min_lr: float, epochs_done: int, max_epochs: int) -> float:
    """CosineAnnealingLR(T_max=max_epochs, eta_min=min_lr) after ``epochs_done`` epochs, in closed form:
    lr_e = min_lr + (lr − min_lr)·(1 + cos(π e / max_epochs))/2, stepped once per epoch."""
    return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * epochs_done / max_epochs)) / 2


def train_step(fused: FusedModel, optimizer: StackedAdamW, x: torch.Tensor, y: torch.Tensor, amp: torch.dtype | None,
               loss_hook: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
    """One optimiser step of every member on its batch ``x``/``y`` ``[R, B, T]``: forward under
    :func:`precision_context`, cross-entropy in fp32 per member (``fused.member_losses``), backward of Σ_i loss_i,
    AdamW step. Returns the detached losses ``[R]``; reads nothing on the host (capturable)."""
    with precision_context(x.device.type, amp):
        logits = fused.logits(x)
    losses = member_losses(logits, y)
    if loss_hook is not None:
        losses = loss_hook(losses)
    optimizer.zero_grad(set_to_none=True)
    losses.sum().backward()
    optimizer.step()
    return losses.detach()


def eval_logits(fused: FusedModel, x: torch.Tensor, amp: torch.dtype | None) -> torch.Tensor:
    """Every member's logits ``[R, B, T, V]`` for one shared batch ``x`` ``[B, T]``."""
    with torch.no_grad(), precision_context(x.device.type, amp):
        return fused.logits(x, shared=True)


def evaluate(logits_of: Callable[[torch.Tensor], torch.Tensor], inputs, targets, batch_size: int, vocab_size: int,
             members: int, device: torch.device, max_batches: int | None = None) -> list[dict]:  # fmt: skip
    """:class:`~deltanet.metrics.TaskMetrics` of every member over the set in order, in batches of ``batch_size``;
    ``logits_of(x [B, T]) -> [R, B, T, V]``; ``max_batches`` caps the batches (the smoke scale)."""
    metrics = [TaskMetrics(vocab_size, device) for _ in range(members)]
    for start in range(0, len(inputs), batch_size)[:max_batches]:
        logits, y = logits_of(inputs[start : start + batch_size]), targets[start : start + batch_size]
        for member, m in enumerate(metrics):
            m.update(logits[member], y)
    return [m.compute() for m in metrics]


LossHook = Callable[[int, int, torch.Tensor], torch.Tensor]


class Group:
    """The live runs of a group, in stack order (``runs``), and what trains them: the fused model, its optimiser,
    each run's shuffle generator, and the (captured) steps. Methods name runs by index.

    ``loss_hook(run index, epoch, loss) -> loss`` is a test seam (a NaN loss for one run, to exercise divergence);
    steps are not captured while it is set."""

    def __init__(self, plan: GroupPlan, runs: list[RunPlan], seq_len: int, capture: bool,
                 loss_hook: LossHook | None = None):  # fmt: skip
        self.plan, self.runs, self.seq_len, self.loss_hook, self.epoch = plan, list(runs), seq_len, loss_hook, 0
        self.amp = autocast_dtype(plan.optim.get("precision", "auto"), plan.device)
        self.fused = build_members(plan, self.runs, seq_len)
        self.optimizer = StackedAdamW(self.fused.parameters(), lr=[r.lr for r in self.runs],
                                      weight_decay=[r.weight_decay for r in self.runs])  # fmt: skip
        self.shuffles = {r.index: torch.Generator().manual_seed(r.seed) for r in self.runs}
        self.capture, self.replayed = capture and loss_hook is None, False
        self._new_steps()

    def _new_steps(self) -> None:
        """Steps for the current members (a graph records one member count: new steps after members leave)."""
        optim = self.plan.optim
        train_shape = (len(self.runs), optim["batch_size"], self.seq_len)
        eval_shape = (optim.get("eval_batch_size", optim["batch_size"]), self.seq_len)
        self.step = CapturedStep(self._train_step, self.capture, {train_shape}, "training step")
        self.eval_step = CapturedStep(self._eval_logits, self.capture, {eval_shape}, "evaluation step")

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return train_step(self.fused, self.optimizer, x, y, self.amp, self._hook if self.loss_hook else None)

    def _hook(self, losses: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.loss_hook(run.index, self.epoch, loss) for run, loss in zip(self.runs, losses)])

    def _eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        return eval_logits(self.fused, x, self.amp)

    def train_epoch(self, data: TensorData, epoch: int) -> EpochStats:
        """Epoch ``epoch`` (1-based): each run's cosine lr, its own shuffle, every batch of ``batch_size`` (the last
        may be short) up to ``max_steps_per_epoch``; one host read, the epoch's mean losses."""
        started, optim, device = time.perf_counter(), self.plan.optim, self.plan.device
        self.epoch, batch, n_train = epoch, optim["batch_size"], len(data.train_inputs)
        lrs = [cosine_lr(r.lr, optim["min_lr"], epoch - 1, optim["max_epochs"]) for r in self.runs]
        self.optimizer.lr.copy_(torch.tensor(lrs, dtype=torch.float64))  # in place: a captured step reads it there
        perms = torch.stack([torch.randperm(n_train, generator=self.shuffles[r.index]) for r in self.runs])
        perms, loss_sum, steps = perms.to(device), torch.zeros(len(self.runs), device=device), 0
        for start in range(0, n_train, batch)[: optim.get("max_steps_per_epoch")]:
            idx = perms[:, start : start + batch]
            loss_sum += self.step(data.train_inputs[idx], data.train_targets[idx])
            steps += 1
        losses = dict(zip((r.index for r in self.runs), (loss_sum / steps).tolist()))
        tokens = min(n_train, steps * batch) * self.seq_len
        return EpochStats(losses, steps, time.perf_counter() - started, tokens)

    def evaluate(self, inputs: torch.Tensor, targets: torch.Tensor, fused: FusedModel | None = None,
                 runs: list[RunPlan] | None = None) -> dict[int, dict]:  # fmt: skip
        """Metrics of every live run on ``inputs``/``targets`` by run index; or of ``fused``, whose members are
        ``runs`` (the best models of runs that stop)."""
        optim = self.plan.optim
        logits_of = self.eval_step if fused is None else (lambda x: eval_logits(fused, x, self.amp))
        runs = self.runs if fused is None else runs
        scores = evaluate(logits_of, inputs, targets, optim.get("eval_batch_size", optim["batch_size"]),
                          self.plan.vocab_size, len(runs), self.plan.device, optim.get("max_eval_batches"))  # fmt: skip
        return {run.index: score for run, score in zip(runs, scores)}

    def member_state(self, index: int) -> dict[str, torch.Tensor]:
        return self.fused.member_state([r.index for r in self.runs].index(index))

    def leave(self, gone: list[RunPlan]) -> None:
        """The runs ``gone`` leave the group: later steps run only the others; the graphs recorded for the old
        members are dropped (new steps record their own), so their memory is free before anything else runs."""
        if not gone:
            return
        self.replayed |= self.step.captured or self.eval_step.captured
        self.capture &= self.step.failure is None and self.eval_step.failure is None
        keep = [p for p, run in enumerate(self.runs) if run not in gone]
        self.runs = [self.runs[p] for p in keep]
        self.shuffles = {r.index: self.shuffles[r.index] for r in self.runs}
        if self.runs:
            self.fused.select(keep)
            self.optimizer.select(keep, self.fused.parameters())
            self._new_steps()
        else:  # the graphs and their memory pools: nothing replays them any more
            self.step.graphs.clear()
            self.eval_step.graphs.clear()

    @property
    def captured(self) -> bool:
        """Whether steps were replayed from CUDA graphs, with no capture failed."""
        failed = self.step.failure or self.eval_step.failure or not self.capture
        return not failed and (self.replayed or self.step.captured or self.eval_step.captured)

    def live_members(self) -> LiveMembers | None:
        """What a resume needs of the live runs (none left: None)."""
        if not self.runs:
            return None
        return LiveMembers([r.index for r in self.runs], {n: p.detach().clone() for n, p in self.fused.params.items()},
                           self.optimizer.state_dict(), {r.index: self.shuffles[r.index].get_state()
                                                         for r in self.runs})  # fmt: skip

    def load_live_members(self, live: LiveMembers) -> None:
        with torch.no_grad():
            for name, p in self.fused.params.items():
                p.copy_(live.params[name])
        self.optimizer.load_state_dict(live.optimizer)
        for index, state in live.shuffles.items():
            self.shuffles[index].set_state(state)


def train_group(plan: GroupPlan, data: TensorData, ckpt: Path, on_epoch: OnEpoch, loss_hook: LossHook | None = None,
                log: Callable[[str], None] = print) -> list[dict]:  # fmt: skip
    """Train (or resume from ``ckpt``) a group; return each run's result columns, in ``plan.runs`` order.

    ``on_epoch(plan, run, state, metrics)`` is called for each run of the epoch once its checkpoint is on disk
    (progress lines; it may raise to stop the job); a SIGTERM meanwhile arrives after the last call."""
    group, states = resume_or_start(plan, len(data.train_inputs[0]), ckpt, loss_hook, log)
    started, prior_wall = time.perf_counter(), {index: s.wall_seconds for index, s in states.items()}
    reset_peak_memory(plan.device)
    while group is not None and group.runs:
        runs, epoch = list(group.runs), states[group.runs[0].index].epoch + 1  # live runs started together
        stats = group.train_epoch(data, epoch)
        tests = group.evaluate(data.test_inputs, data.test_targets)
        stopped = [run for run in runs if judge(group, states[run.index], run, epoch, stats, tests[run.index])]
        for run in runs:
            states[run.index].wall_seconds = prior_wall[run.index] + time.perf_counter() - started
        group.leave(stopped)  # first: their graphs go before finish() evaluates the best models eagerly
        finish(group, stopped, states, data)
        checkpoint = Checkpoint({index: dataclasses.asdict(s) for index, s in states.items()}, group.live_members())
        with signals_held(signal.SIGTERM):  # the checkpoint and the lines that announce it, as one step
            save_checkpoint(ckpt, [r.index for r in plan.runs], checkpoint)
            for run in runs:
                on_epoch(plan, run, states[run.index], progress(states[run.index], stats))
    return [states[run.index].result for run in plan.runs]


OnEpoch = Callable[[GroupPlan, RunPlan, RunState, dict], None]


def judge(group: Group, state: RunState, run: RunPlan, epoch: int, stats: EpochStats, test: dict) -> bool:
    """Run ``run`` observes its epoch (the protocol decides); keeps the model of a new best epoch. True: it stops."""
    verdict = state.observe(epoch, stats, stats.losses[run.index], test, group.plan.optim)
    if verdict.best:
        state.best_model = group.member_state(run.index)
    return verdict.stop_reason is not None


def progress(state: RunState, stats: EpochStats) -> dict:
    """What a progress line shows of a run's last epoch: its train loss, the group's steps/s, its test metrics."""
    last = state.history[-1]
    return {"train_loss": last["train_loss"], "steps_per_second": stats.steps / stats.seconds,
            **{k.removeprefix("test_"): v for k, v in last.items() if k.startswith("test_")}}  # fmt: skip


def finish(group: Group, stopped: list[RunPlan], states: dict[int, RunState], data: TensorData) -> None:
    """The results of the runs ``stopped`` (they stop this epoch): the train metrics of each run's best model
    (evaluated together), the best epoch's test metrics, timing and the group's columns."""
    best = [run for run in stopped if states[run.index].best_model is not None]
    trains = {}
    if best:
        models = FusedModel.from_member_states(group.fused, [states[run.index].best_model for run in best])
        trains = group.evaluate(data.train_inputs, data.train_targets, models, best)
    for run in stopped:
        states[run.index].finish(trains.get(run.index, dict(NAN_METRICS)),
                                 peak_memory_mb=peak_memory_mb(group.plan.device),
                                 num_parameters=group.fused.num_parameters(), group_size=len(group.plan.runs),
                                 captured=group.captured)  # fmt: skip


def resume_or_start(plan: GroupPlan, seq_len: int, ckpt: Path, loss_hook: LossHook | None,
                    log: Callable[[str], None]) -> tuple[Group | None, dict[int, RunState]]:  # fmt: skip
    """The group as ``ckpt`` left it, on ``plan.device`` (None: every run had finished), or new. A checkpoint that
    cannot be used is moved aside (the log line names where) and the group starts over; any other error while
    resuming is the caller's."""
    capture = capture_enabled(plan.optim.get("capture", "auto"), plan.device, log)
    checkpoint = None
    if ckpt.exists():
        try:
            checkpoint = read_checkpoint(ckpt, [r.index for r in plan.runs], plan.device)
        except UnusableCheckpoint as err:
            aside = set_aside(ckpt)
            log(f"  runs {plan.span}: checkpoint {ckpt} unusable ({err}); moved to {aside}, restarting these runs")
    if checkpoint is None:
        return Group(plan, plan.runs, seq_len, capture, loss_hook), {r.index: RunState() for r in plan.runs}
    states = {index: RunState(**state) for index, state in checkpoint.states.items()}
    if checkpoint.live is None:
        return None, states
    group = Group(plan, [r for r in plan.runs if r.index in checkpoint.live.runs], seq_len, capture, loss_hook)
    group.load_live_members(checkpoint.live)
    return group, states
