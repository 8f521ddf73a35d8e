"""Training under the MAD protocol: the runs of one setting trained together as one fused group (a solo run is a
group of one), resumable from a per-epoch checkpoint.

Each member keeps its solo run's meaning (``deltanet/training/fused.py``): built from its own seed; shuffled by its
own ``torch.Generator`` (the last batch may be short); AdamW with its own lr and weight decay (torch defaults:
betas (0.9, 0.999), eps 1e-8, decay on every parameter; ``deltanet/training/optim.py``); its own cosine schedule,
stepped once per epoch, lr_e = min_lr + (lr − min_lr)·(1 + cos(π e / max_epochs))/2 after e epochs (torch's
CosineAnnealingLR in closed form); cross-entropy with ignore_index -100; evaluation on the test set after every
epoch; and the protocol of ``deltanet/training/protocol.py`` per member: early stop at ``stop_accuracy``,
divergence on a non-finite epoch loss, reported metrics of the epoch with the lowest test perplexity (train metrics
evaluated on that epoch's saved model). A member that stops leaves the group: it costs nothing afterwards.

Evaluations run in batches of ``optim.eval_batch_size`` (default ``batch_size``): MAD's accuracy is the mean of
per-batch macro accuracies over its loader's batches of 128. Precision (``optim.precision``): ``auto`` = bf16
autocast on CUDA (MAD trains bf16-mixed), fp32 elsewhere; ``bf16`` forces the GPU path's autocast on any device;
``fp32`` turns it off. ``optim.capture`` replays the steps from CUDA graphs (``deltanet/training/capture.py``).
``optim.max_steps_per_epoch`` / ``max_eval_batches`` (the smoke scale) cap the batches of an epoch / evaluation.

Determinism: a checkpoint holds the active members' parameters, optimiser state and shuffle generators and every
member's record, so a resumed group continues bit for bit (the model draws no random numbers while training).
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

from deltanet.io import atomic_path
from deltanet.metrics import TaskMetrics
from deltanet.model import ModelConfig, build_model
from deltanet.training import protocol
from deltanet.training.capture import CapturedStep, capture_enabled
from deltanet.training.fused import FusedModel, member_losses
from deltanet.training.optim import StackedAdamW
from deltanet.training.provenance import peak_memory_mb, reset_peak_memory

CHECKPOINT_FORMAT = 2  # v2: one file per fused group
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


@dataclass(frozen=True)
class RunPlan:
    """One run (a member of its group); ``index`` is 1-based in job order."""

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


@dataclass
class RunState:
    """One member's record; a group checkpoint holds every member's."""

    epoch: int = 0  # epochs completed
    history: list = field(default_factory=list)  # per epoch: train_loss + test metrics
    best_epoch: int = 0  # 1-based; 0 = no finite epoch yet
    best_metrics: dict = field(default_factory=lambda: dict(NAN_METRICS))
    best_model: dict | None = None
    stop_reason: str | None = None
    wall_seconds: float = 0.0
    train_seconds: float = 0.0
    train_tokens: int = 0
    result: dict | None = None  # the row's metric/timing columns, once the member has stopped


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
    Without autocast's weight cache: a captured step must not keep casts made during capture (capture.py).
    """
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype, cache_enabled=False)


def build_members(plan: GroupPlan, seq_len: int) -> FusedModel:
    """Every member built as its solo run would be: its seed, then the model build; stacked into one group."""
    cfg = ModelConfig(vocab_size=plan.vocab_size, **plan.model_kwargs, max_length=seq_len)
    models = []
    for run in plan.runs:
        seed_everything(run.seed)
        models.append(build_model(cfg, autoencoder=plan.autoencoder).to(plan.device))
    return FusedModel.stack(models)


def cosine_lr(lr: float, min_lr: float, epochs_done: int, max_epochs: int) -> float:
    """CosineAnnealingLR(T_max=max_epochs, eta_min=min_lr) after ``epochs_done`` epochs, in closed form."""
    return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * epochs_done / max_epochs)) / 2


def train_step(fused: FusedModel, optimizer: StackedAdamW, x: torch.Tensor, y: torch.Tensor, amp: torch.dtype | None,
               loss_hook: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
    """One optimiser step of every member on its batch ``x``/``y`` ``[R, B, T]``: forward under
    :func:`precision_context`, cross-entropy in fp32 per member (``-100`` = not scored), backward of Σ_i loss_i,
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
    """TaskMetrics of every member over the set in order, in batches of ``batch_size`` (MAD's accuracy is a per-batch
    mean); ``logits_of(x [B, T]) -> [R, B, T, V]``; ``max_batches`` caps the batches (the smoke scale)."""
    metrics = [TaskMetrics(vocab_size, device) for _ in range(members)]
    for start in range(0, len(inputs), batch_size)[:max_batches]:
        logits, y = logits_of(inputs[start : start + batch_size]), targets[start : start + batch_size]
        for member, m in enumerate(metrics):
            m.update(logits[member], y)
    return [{k: float(v) for k, v in m.compute().items() if k in METRIC_KEYS} for m in metrics]


class Group:
    """The live part of a group: the fused model of the active members, their optimiser, shuffles and steps."""

    def __init__(self, plan: GroupPlan, fused: FusedModel, active: list[int], amp, capture: bool, shapes: tuple):
        self.plan, self.fused, self.active, self.amp = plan, fused, active, amp
        runs = [plan.runs[i] for i in active]
        self.optimizer = StackedAdamW(fused.parameters(), lr=[r.lr for r in runs],
                                      weight_decay=[r.weight_decay for r in runs])  # fmt: skip
        self.shuffles = {i: torch.Generator().manual_seed(plan.runs[i].seed) for i in active}
        self.capture, self.shapes, self.replayed = capture, shapes, False
        self._new_steps()

    def _new_steps(self) -> None:
        if hasattr(self, "step"):  # the steps of the group before a member left it
            self.replayed |= self.step.captured or self.eval.captured
            self.capture &= self.step.failure is None and self.eval.failure is None
        (batch, seq), eval_batch = self.shapes
        R, amp, enabled = len(self.active), self.amp, self.capture
        self.step = CapturedStep(lambda x, y: train_step(self.fused, self.optimizer, x, y, amp), enabled,
                                 {(R, batch, seq)}, "training step")  # fmt: skip
        self.eval = CapturedStep(lambda x: eval_logits(self.fused, x, amp), enabled, {(eval_batch, seq)},
                                 "evaluation step")  # fmt: skip

    @property
    def captured(self) -> bool:
        """Whether steps were replayed from CUDA graphs, with no capture failed."""
        failed = self.step.failure or self.eval.failure or not self.capture
        return not failed and (self.replayed or self.step.captured or self.eval.captured)

    def keep(self, positions: list[int]) -> None:
        """Keep the active members at ``positions``; the others leave the group (new graphs are recorded)."""
        self.active = [self.active[p] for p in positions]
        if not self.active:
            return
        self.fused.select(positions)
        self.optimizer.select(positions, self.fused.parameters())
        self.shuffles = {i: self.shuffles[i] for i in self.active}
        self._new_steps()

    def state_dict(self) -> dict:
        return {"active": list(self.active), "params": {n: p.detach().clone() for n, p in self.fused.params.items()},
                "optimizer": self.optimizer.state_dict(),
                "shuffles": {i: g.get_state() for i, g in self.shuffles.items()}}  # fmt: skip

    def load_state_dict(self, payload: dict) -> None:
        with torch.no_grad():
            for name, p in self.fused.params.items():
                p.copy_(payload["params"][name])
        self.optimizer.load_state_dict(payload["optimizer"])
        for i, state in payload["shuffles"].items():
            self.shuffles[i].set_state(state)


def save_checkpoint(path: Path, group: Group, states: list[RunState]) -> None:
    payload = {"format": CHECKPOINT_FORMAT, "runs": [r.index for r in group.plan.runs], **group.state_dict(),
               "states": [dataclasses.asdict(s) for s in states]}  # fmt: skip
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, plan: GroupPlan) -> dict:
    # our own file (it holds generator states and Python records, hence weights_only=False); loaded to CPU, as the
    # generator states must be; load_state_dict copies the tensors onto the parameters' device
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint format {payload.get('format')}, expected {CHECKPOINT_FORMAT}")
    if payload["runs"] != [r.index for r in plan.runs]:
        raise ValueError(f"checkpoint of runs {payload['runs']}, this group has {[r.index for r in plan.runs]}")
    return payload


OnEpoch = Callable[[GroupPlan, RunPlan, RunState, dict], None]
LossHook = Callable[[int, int, torch.Tensor], torch.Tensor]


def train_group(plan: GroupPlan, data: TensorData, ckpt: Path, on_epoch: OnEpoch, loss_hook: LossHook | None = None,
                log: Callable[[str], None] = print) -> list[dict]:  # fmt: skip
    """Train (or resume) a group; return each run's metric/timing columns, in ``plan.runs`` order.

    ``on_epoch(plan, run, state, metrics)`` is called for each active member once the epoch's checkpoint is on disk
    (progress lines; it may raise to stop the job). ``loss_hook(run index, epoch, loss) -> loss`` is a test seam
    (e.g. a NaN loss for one member to exercise divergence); steps are not captured while it is set.
    """
    device, opt_cfg = plan.device, plan.optim
    max_epochs, batch_size, min_lr = opt_cfg["max_epochs"], opt_cfg["batch_size"], opt_cfg["min_lr"]
    amp = autocast_dtype(opt_cfg.get("precision", "auto"), device)
    max_steps, max_eval = opt_cfg.get("max_steps_per_epoch"), opt_cfg.get("max_eval_batches")
    eval_batch = opt_cfg.get("eval_batch_size", batch_size)
    n_train, seq_len = data.train_inputs.shape
    started = time.perf_counter()

    capture = capture_enabled(opt_cfg.get("capture", "auto"), device, log) and loss_hook is None
    group = Group(plan, build_members(plan, seq_len), list(range(len(plan.runs))), amp, capture,
                  ((batch_size, seq_len), eval_batch))  # fmt: skip
    states = [RunState() for _ in plan.runs]
    if ckpt.exists():
        try:
            payload = load_checkpoint(ckpt, plan)
            states = [RunState(**s) for s in payload["states"]]
            group.keep(payload["active"])
            if group.active:
                group.load_state_dict(payload)
        except Exception as err:  # unreadable or from an older format: this group starts over, nothing else is lost
            log(f"  runs {_span(plan)}: checkpoint {ckpt} unusable ({type(err).__name__}: {err}); restarting them")
            ckpt.unlink()
            return train_group(plan, data, ckpt, on_epoch, loss_hook, log)
    prior_wall = {i: s.wall_seconds for i, s in enumerate(states)}
    reset_peak_memory(device)

    while group.active:
        epoch_start = time.perf_counter()
        members = list(group.active)
        epoch = states[members[0]].epoch + 1  # the active members started together: one epoch count
        with torch.no_grad():
            lrs = [cosine_lr(plan.runs[i].lr, min_lr, epoch - 1, max_epochs) for i in members]
            group.optimizer.lr.copy_(torch.tensor(lrs, dtype=torch.float64))
        perms = torch.stack([torch.randperm(n_train, generator=group.shuffles[i]) for i in members]).to(device)
        step = group.step if loss_hook is None else _hooked_step(group, loss_hook, epoch)
        loss_sum = torch.zeros(len(members), device=device)
        steps = 0
        for start in range(0, n_train, batch_size)[:max_steps]:
            idx = perms[:, start : start + batch_size]
            loss_sum += step(data.train_inputs[idx], data.train_targets[idx])
            steps += 1
        train_losses = (loss_sum / steps).tolist()  # one device sync per epoch
        train_time = time.perf_counter() - epoch_start

        finite = [p for p, loss in enumerate(train_losses) if not protocol.is_diverged(loss)]
        scores = evaluate(group.eval, data.test_inputs, data.test_targets, eval_batch, plan.vocab_size, len(members),
                          device, max_eval)  # fmt: skip
        tests = {p: scores[p] for p in finite}
        stopped = []
        for position, i in enumerate(members):
            st, test = states[i], tests.get(position, dict(NAN_METRICS))
            st.epoch, st.train_seconds = epoch, st.train_seconds + train_time
            st.train_tokens += min(n_train, steps * batch_size) * seq_len
            if position not in tests:
                st.stop_reason = "diverged"
            else:
                if protocol.is_better(test["ppl"], st.best_metrics["ppl"] if st.best_epoch else None):
                    st.best_epoch, st.best_metrics = epoch, test
                    st.best_model = group.fused.member_state(position)
                if protocol.should_stop_early(test["acc"], opt_cfg["stop_accuracy"]):
                    st.stop_reason = "early_stopped"
                elif epoch >= max_epochs:
                    st.stop_reason = "max_epochs"
            st.history.append({"epoch": epoch, "train_loss": train_losses[position],
                               **{f"test_{k}": v for k, v in test.items()}})  # fmt: skip
            st.wall_seconds = prior_wall[i] + time.perf_counter() - started
            if st.stop_reason is not None:
                stopped.append(position)
        if stopped:
            _finish(group, [members[p] for p in stopped], states, data, eval_batch, max_eval)
            group.keep([p for p in range(len(members)) if p not in stopped])
        save_checkpoint(ckpt, group, states)
        for position, i in enumerate(members):
            on_epoch(plan, plan.runs[i], states[i], {"train_loss": train_losses[position],
                                                     "steps_per_second": steps / train_time,
                                                     **tests.get(position, NAN_METRICS)})  # fmt: skip
    return [s.result for s in states]


def _hooked_step(group: Group, loss_hook: LossHook, epoch: int) -> Callable:
    """The eager training step with ``loss_hook(run index, epoch, loss)`` applied to each member's loss."""
    runs = [group.plan.runs[i].index for i in group.active]

    def hook(losses: torch.Tensor) -> torch.Tensor:
        return torch.stack([loss_hook(run, epoch, loss) for run, loss in zip(runs, losses)])

    return lambda x, y: train_step(group.fused, group.optimizer, x, y, group.amp, hook)


def _span(plan: GroupPlan) -> str:
    first, last = plan.runs[0].index, plan.runs[-1].index
    return f"{first}" if first == last else f"{first}-{last}"


def _finish(group: Group, members: list[int], states: list[RunState], data: TensorData, eval_batch: int,
            max_eval: int | None) -> None:  # fmt: skip
    """The result columns of ``members`` (run positions), which stop now: train metrics of each best model."""
    plan = group.plan
    best = [i for i in members if states[i].best_model is not None]
    trains = {}
    if best:
        fused = FusedModel.from_member_states(group.fused, [states[i].best_model for i in best])
        scores = evaluate(lambda x: eval_logits(fused, x, group.amp), data.train_inputs, data.train_targets,
                          eval_batch, plan.vocab_size, len(best), plan.device, max_eval)  # fmt: skip
        trains = dict(zip(best, scores))
    for i in members:
        st, train = states[i], trains.get(i, dict(NAN_METRICS))
        st.result = {
            **{f"test_{k}": v for k, v in st.best_metrics.items()},
            **{f"train_{k}": v for k, v in train.items()},
            "best_epoch": st.best_epoch,
            "epochs_run": st.epoch,
            "stop_reason": st.stop_reason,
            "wall_seconds": st.wall_seconds,
            "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "tokens_per_second": st.train_tokens / st.train_seconds if st.train_seconds else math.nan,
            "peak_memory_mb": peak_memory_mb(plan.device),
            "num_parameters": group.fused.num_parameters(),
            "group_size": len(plan.runs),
            "captured": group.captured,
        }
        st.best_model = None  # the row is written; the checkpoint need not carry the weights any more
