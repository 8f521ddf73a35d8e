"""The test harness of the ops, shared by ``deltanet verify-kernels``, ``tests/`` and ``benchmarks/kernels.py``.

Inputs like the model's (unit q/k rows, β ∈ (0, 1), small negative log decays), one forward + backward returning
every output and gradient, and the fla error measures (``fla/utils/testing.py`` ``assert_close``): max |ref − out|
and RMS(ref − out) / RMS(ref), with fla's tolerances per dtype and tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

ATOL = 1e-6  # a check passes outright when max |ref − out| ≤ ATOL (tensors that are ~0)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def tolerance(dtype: torch.dtype, tensor: str, gated: bool) -> float:
    """RMS-ratio tolerance (fla convention): fp16/bf16 o/state 0.006, gradients 0.008, gated dβ/dg 0.02; fp32 1e-4.

    ``tensor`` is a key of :func:`forward_backward`'s result (``o``, ``final_state``, ``dq``, …)."""
    if dtype == torch.float32:
        return 1e-4
    if tensor in ("o", "final_state"):
        return 0.006
    return 0.02 if gated and tensor in ("dbeta", "dg") else 0.008


def make_inputs(
    B: int,
    T: int,
    H: int,
    Dk: int,
    Dv: int,
    *,
    gated: bool,
    dtype: torch.dtype = torch.float32,
    h0: bool = False,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> dict[str, Tensor]:
    """q, k, v ``[B, T, H, D]`` and β ``[B, T, H]`` in ``dtype``; g (gated) = logsigmoid(N(0, 1))/4 and the initial
    state (``h0``) ~ N(0, 1) in fp32, as the model makes them. Drawn on the CPU from ``seed``, then moved to
    ``device``, so every device sees the same numbers."""
    gen = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(B, T, H, Dk, generator=gen), dim=-1)
    k = F.normalize(torch.randn(B, T, H, Dk, generator=gen), dim=-1)
    v = torch.randn(B, T, H, Dv, generator=gen)
    beta = torch.rand(B, T, H, generator=gen)
    inputs = {"q": q.to(dtype), "k": k.to(dtype), "v": v.to(dtype)}
    if gated:
        inputs["g"] = F.logsigmoid(torch.randn(B, T, H, generator=gen)) / 4
    inputs["beta"] = beta.to(dtype)
    if h0:
        inputs["initial_state"] = torch.randn(B, H, Dk, Dv, generator=gen)
    return {n: x.to(device) for n, x in inputs.items()}


def forward_backward(
    fn: Callable[..., tuple[Tensor, Tensor]], inputs: dict[str, Tensor], *, use_state: bool = True, seed: int = 1,
    **kwargs,
) -> dict[str, Tensor]:  # fmt: skip
    """``fn(**inputs, **kwargs)`` → (o, S_T), then the gradients of (o·dO).sum() + (S_T·dS_T).sum() (random dO, dS_T
    from ``seed``; without the second term when ``use_state`` is False). Returns {"o", "final_state", "d<input>"}."""
    leaves = {n: x.detach().clone().requires_grad_() for n, x in inputs.items()}
    o, state = fn(**leaves, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    do = torch.randn(o.shape, generator=gen).to(o.device, o.dtype)
    dstate = torch.randn(state.shape, generator=gen).to(state.device)
    loss = (o.float() * do.float()).sum() + ((state * dstate).sum() if use_state else 0)
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return {"o": o.detach(), "final_state": state.detach(), **{f"d{n}": g for n, g in zip(leaves, grads)}}


def rms_ratio(ref: Tensor, out: Tensor) -> float:
    """RMS(ref − out) / (RMS(ref) + 1e-8), computed in fp64."""
    ref, out = ref.double(), out.double()
    return ((ref - out).pow(2).mean().sqrt() / (ref.pow(2).mean().sqrt() + 1e-8)).item()


@dataclass(frozen=True)
class Error:
    """How far ``out`` is from ``ref``; :meth:`within` is the pass/fail rule."""

    max_abs: float
    rms_ratio: float
    finite: bool

    @classmethod
    def of(cls, ref: Tensor, out: Tensor) -> Error:
        finite = bool(torch.isfinite(out).all())
        return cls((ref.double() - out.double()).abs().max().item(), rms_ratio(ref, out), finite)

    def within(self, tol: float, atol: float = ATOL) -> bool:
        """Pass when the output is finite and max abs ≤ ``atol`` or the RMS ratio < ``tol``."""
        return self.finite and (self.max_abs <= atol or self.rms_ratio < tol)


def assert_close(name: str, ref: Tensor, out: Tensor, ratio: float, atol: float = ATOL) -> None:
    """Assert :meth:`Error.within`; the failure names the tensor and both errors."""
    err = Error.of(ref, out)
    assert err.finite, f"{name}: output has NaN or Inf"
    message = f"{name}: RMS-ratio error {err.rms_ratio:.3e} ≥ {ratio:.1e} (max abs {err.max_abs:.3e})"
    assert err.within(ratio, atol), message
