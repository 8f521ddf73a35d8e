"""AdamW over stacked parameters: dim 0 of every parameter indexes R members, each with its own lr and weight decay.

Fused runs train R runs of one model (differing in learning rate, weight decay and seed) as one model whose
parameters were stacked by ``torch.func.stack_module_state``. ``torch.optim.AdamW`` holds one Python-float lr per
param group, so it can neither give each member its own lr nor change the lr inside a captured CUDA graph. Here lr,
weight decay and the step count are device tensors of shape [R], broadcast against a parameter [R, *rest] as
[R, 1, ..., 1]; ``step()`` reads no tensor on the host (the tests run it on fake tensors), so it can be captured,
and the caller changes the lr in place (``opt.lr.copy_(new_lrs)``). Members stopped early are dropped with
``select``.

Per member, with step count t, lr γ, weight decay λ, betas β1, β2 (the decoupled form of torch/optim/adamw.py;
amsgrad and maximize off)::

    t ← t + 1
    θ ← θ · (1 − γλ)
    m ← lerp(m, g, 1 − β1)                    v ← β2 v + (1 − β2) g²
    θ ← θ + ((−γ / (1 − β1^t)) · m) / (sqrt(v) / sqrt(1 − β2^t) + ε)

The reference is torch/optim/adamw.py, i.e. the non-capturable branches of ``_multi_tensor_adam`` (AdamW's default
on CUDA) and ``_single_tensor_adam`` (its default on CPU) in torch/optim/adam.py, which do the same operations in
the same order. This class does them in that order too, with the per-member scalars (1 − γλ, −γ / (1 − β1^t),
sqrt(1 − β2^t)) computed in float64 as torch computes them in Python floats, then rounded to the parameters' dtype
as its kernels round a scalar. With fp32 parameters on CPU each member's trajectory equals ``torch.optim.AdamW`` on
that member alone bit for bit (tests/test_stacked_adamw.py); on CUDA torch's kernels may round differently (fp32
rounding, untested). Torch's capturable branch orders the arithmetic differently (it divides the denominator by
the step size), so it is not the reference.

lr and weight decay are held in float64 so a Python-float lr is stored exactly. t counts calls of ``step()`` per
member; torch counts per parameter, skipping parameters whose grad is None. The two agree whenever each parameter
has a grad at every step or at none (a frozen parameter).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _per_member(coef: Tensor, like: Tensor) -> Tensor:
    """``coef`` [R] as [R, 1, ..., 1], to broadcast against ``like`` [R, *rest]."""
    return coef.view(-1, *([1] * (like.dim() - 1)))


def _copy_into(dst: Tensor, src: Tensor, name: str) -> None:
    if src.shape != dst.shape:  # copy_ would broadcast a wrong shape silently
        raise ValueError(f"{name}: shape {tuple(src.shape)} in the state dict, {tuple(dst.shape)} in the optimiser")
    dst.copy_(src)


def _check_params(params: Sequence[Tensor], like: Sequence[Tensor] = ()) -> None:
    """One device, one floating dtype, one member count; with ``like``, the same trailing shapes as ``like``."""
    if not params:
        raise ValueError("no parameters")
    first = params[0]
    if not first.is_floating_point() or first.dim() == 0:
        raise ValueError("parameters must be floating point with a leading member dimension")
    for i, p in enumerate(params):
        if p.device != first.device or p.dtype != first.dtype or p.dim() == 0 or p.shape[0] != first.shape[0]:
            raise ValueError(f"parameter {i} ({p.dtype}, {p.device}, shape {tuple(p.shape)}) does not match "
                             f"parameter 0 ({first.dtype}, {first.device}, {first.shape[0]} members)")  # fmt: skip
        if like and p.shape[1:] != like[i].shape[1:]:
            raise ValueError(f"parameter {i} has trailing shape {tuple(p.shape[1:])}, not {tuple(like[i].shape[1:])}")


class StackedAdamW:
    """AdamW (torch's decoupled form, amsgrad off, maximize off) over parameters whose dim 0 indexes R members,
    each member with its own lr and weight decay; see the module docstring for the math.

    ``lr`` and ``weight_decay`` (R values each) become float64 tensors ``opt.lr`` and ``opt.weight_decay`` on the
    parameters' device; update them in place. The moments are allocated here, not on the first step, so the state
    dict is complete from the start and a captured step creates no state. All parameters share one device and one
    floating dtype.
    """

    def __init__(self, params: Sequence[Tensor], lr: Tensor | Sequence[float], weight_decay: Tensor | Sequence[float],
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:  # fmt: skip
        _check_params(params)
        self.params = list(params)
        device = self.params[0].device
        self.lr = torch.as_tensor(lr, dtype=torch.float64, device=device).clone()
        self.weight_decay = torch.as_tensor(weight_decay, dtype=torch.float64, device=device).clone()
        members = self.params[0].shape[0]
        for name, t in (("lr", self.lr), ("weight_decay", self.weight_decay)):
            if t.shape != (members,):
                raise ValueError(f"{name} has shape {tuple(t.shape)}; the parameters have {members} members")
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.steps = torch.zeros(members, dtype=torch.float32, device=device)
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the grads, or with ``set_to_none=False`` zero them in place (a captured graph reads them there)."""
        if set_to_none:
            for p in self.params:
                p.grad = None
        else:
            torch._foreach_zero_([p.grad for p in self.params if p.grad is not None])

    @torch.no_grad()
    def step(self) -> None:
        """One AdamW step of every member; parameters whose grad is None are left alone."""
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        params = [self.params[i] for i in live]
        grads = [p.grad for p in params]
        exp_avgs = [self.exp_avg[i] for i in live]
        exp_avg_sqs = [self.exp_avg_sq[i] for i in live]
        beta1, beta2 = self.betas
        dtype = params[0].dtype

        self.steps.add_(1)
        t = self.steps.to(torch.float64)
        decay = (1 - self.lr * self.weight_decay).to(dtype)
        step_size = (-(self.lr / (1 - beta1**t))).to(dtype)
        bias_correction2_sqrt = (1 - beta2**t).sqrt().to(dtype)

        for p in params:
            p.mul_(_per_member(decay, p))
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        denom = torch._foreach_sqrt(exp_avg_sqs)
        for d in denom:
            d.div_(_per_member(bias_correction2_sqrt, d))
        torch._foreach_add_(denom, self.eps)
        update = [m * _per_member(step_size, m) for m in exp_avgs]  # torch's addcdiv: p + (value · m) / denom
        torch._foreach_div_(update, denom)
        torch._foreach_add_(params, update)

    def state_dict(self) -> dict:
        """A snapshot (copies, on the parameters' device): later steps do not change it."""
        return {
            "step": self.steps.clone(),
            "lr": self.lr.clone(),
            "weight_decay": self.weight_decay.clone(),
            "exp_avg": [m.clone() for m in self.exp_avg],
            "exp_avg_sq": [v.clone() for v in self.exp_avg_sq],
            "betas": self.betas,
            "eps": self.eps,
        }

    def load_state_dict(self, d: dict) -> None:
        """Copy ``d`` into this optimiser's tensors in place (so a graph captured on them stays valid)."""
        if tuple(d["betas"]) != self.betas or d["eps"] != self.eps:
            raise ValueError(f"state dict has betas {tuple(d['betas'])}, eps {d['eps']}; "
                             f"this optimiser has {self.betas}, {self.eps}")  # fmt: skip
        for key in ("exp_avg", "exp_avg_sq"):
            if len(d[key]) != len(self.params):
                raise ValueError(f"state dict has {len(d[key])} {key} tensors for {len(self.params)} parameters")
        _copy_into(self.steps, d["step"], "step")
        _copy_into(self.lr, d["lr"], "lr")
        _copy_into(self.weight_decay, d["weight_decay"], "weight_decay")
        for i in range(len(self.params)):
            _copy_into(self.exp_avg[i], d["exp_avg"][i], f"exp_avg[{i}]")
            _copy_into(self.exp_avg_sq[i], d["exp_avg_sq"][i], f"exp_avg_sq[{i}]")

    def select(self, keep: Tensor | Sequence[int], params: Sequence[Tensor]) -> None:
        """Keep only members ``keep`` (indices into dim 0, or a bool mask), in that order.

        ``params`` are the caller's parameters already sliced the same way (``p[keep]``, one per parameter, in the
        same order). The optimiser's tensors are replaced, not resized: read ``opt.lr`` again afterwards, and
        recapture a CUDA graph.
        """
        if len(params) != len(self.params):
            raise ValueError(f"{len(params)} parameters for an optimiser of {len(self.params)}")
        index = torch.as_tensor(keep, device=self.steps.device)
        steps = self.steps[index]
        _check_params(params, like=self.params)
        if params[0].shape[0] != steps.shape[0]:
            raise ValueError(f"parameters have {params[0].shape[0]} members; keep selects {steps.shape[0]}")
        self.params = list(params)
        self.steps = steps
        self.lr = self.lr[index]
        self.weight_decay = self.weight_decay[index]
        self.exp_avg = [m[index] for m in self.exp_avg]
        self.exp_avg_sq = [v[index] for v in self.exp_avg_sq]


def select_members(state: dict, keep: Sequence[int]) -> dict:
    """A :meth:`StackedAdamW.state_dict` of the members ``keep`` only (indices into dim 0), in that order."""
    per_member = ("step", "lr", "weight_decay")
    return {**state, **{key: state[key][list(keep)] for key in per_member},
            **{key: [t[list(keep)] for t in state[key]] for key in ("exp_avg", "exp_avg_sq")}}  # fmt: skip
