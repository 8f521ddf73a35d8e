"""Backend dispatch between the naive chunk loop and our Triton kernels (``config.yaml`` ``kernels:``).

- ``naive``: always the readable PyTorch loop (runs any loop body).
- ``triton``: the fused kernels (:mod:`deltanet.ops.kernels`) when the caller says they compute its loop
  (``fused_ok``: the loop is the baseline's); needs CUDA, or a CPU with ``TRITON_INTERPRET=1`` (slow; for tests).
- ``auto``: ``triton`` on CUDA, ``naive`` elsewhere.

With ``fused_ok=False`` the naive op runs ``loop_body`` whatever the backend. The kernel modules (and so triton)
are imported lazily: see :mod:`deltanet.ops.kernels.launch` for why. :func:`record_input_dtypes` shows what dtypes
reach the ops under autocast (docs/deltanet-math.md §7).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

import torch
from torch import Tensor

from deltanet.ops.chunkwise import InitCarry, LoopBody, default_init_carry
from deltanet.ops.delta_rule.naive import baseline_loop_body, delta_rule_chunkwise
from deltanet.ops.gated_delta_rule.naive import gated_delta_rule_chunkwise, gated_loop_body
from deltanet.ops.kernels.launch import MAX_KEY_DIM, interpreter_enabled, kernels_fit

BACKENDS = ("auto", "triton", "naive")

_records: list[dict[str, str]] | None = None  # where record_input_dtypes collects, while it is open


@contextlib.contextmanager
def record_input_dtypes() -> Iterator[list[dict[str, str]]]:
    """Within: each :func:`delta_rule` / :func:`gated_delta_rule` call appends ``{"op", "path", "q", "k", "v", "g",
    "beta"}`` to the yielded list (``path``: ``kernels`` or ``naive loop``; dtype names, ``g`` "-" when ungated)."""
    global _records
    outer, _records = _records, []
    try:
        yield _records
    finally:
        _records = outer


def _record(op: str, kernels: bool, q: Tensor, k: Tensor, v: Tensor, g: Tensor | None, beta: Tensor) -> None:
    if _records is not None:
        dtypes = {n: "-" if x is None else str(x.dtype).removeprefix("torch.") for n, x in zip("qkvg", (q, k, v, g))}
        _records.append({"op": op, "path": "kernels" if kernels else "naive loop", **dtypes,
                         "beta": str(beta.dtype).removeprefix("torch.")})  # fmt: skip


def resolve_backend(name: str, device: torch.device | str) -> str:
    """``auto`` | ``triton`` | ``naive`` → ``"triton"`` or ``"naive"`` for tensors on ``device``."""
    if name not in BACKENDS:
        raise ValueError(f"kernels must be one of {BACKENDS}, got {name!r}")
    device = torch.device(device)
    if name == "naive":
        return "naive"
    if name == "auto":
        return "triton" if device.type == "cuda" else "naive"
    if device.type == "cuda" or interpreter_enabled():
        return "triton"
    raise RuntimeError(
        f"kernels: triton was requested for tensors on {device.type!r}, but the Triton kernels need a CUDA GPU. "
        "On a CPU either use kernels: auto / naive, or set TRITON_INTERPRET=1 before the kernels are imported "
        "(the Triton interpreter; correct but very slow, meant for tests)."
    )


def use_kernels(backend: str, device: torch.device, chunk_size: int, key_dim: int, fused_ok: bool) -> bool:
    """Whether the kernels run; ``auto`` falls back to the naive loop (with a warning) where they cannot launch."""
    if not fused_ok:
        return False
    resolved = resolve_backend(backend, device)
    if resolved == "triton" and not kernels_fit(chunk_size, key_dim):
        why = (f"the Triton kernels launch at chunk_size {chunk_size} with key head dims up to "
               f"{MAX_KEY_DIM[chunk_size]}, got {key_dim}" if chunk_size in MAX_KEY_DIM else
               f"the Triton kernels take chunk_size in {tuple(MAX_KEY_DIM)}, got {chunk_size}")  # fmt: skip
        if backend == "auto":
            warnings.warn(f"{why}; using the naive loop")
            return False
        raise ValueError(f"kernels: triton: {why}")
    return resolved == "triton"


def delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    chunk_size: int = 64,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    *,
    backend: str = "auto",
    loop_body: LoopBody = baseline_loop_body,
    init_carry: InitCarry = default_init_carry,
    params: object | None = None,
    fused_ok: bool = True,
    loop_precision: str = "fp32",
) -> tuple[Tensor, Tensor]:
    """Delta rule through the chosen backend. The naive path runs ``loop_body`` from ``init_carry(S0)`` with
    ``params`` (the loop's learnable parameters), computing as ``loop_precision`` says under autocast
    (:func:`deltanet.ops.chunkwise.loop_precision`). ``fused_ok``: ``loop_body`` is the baseline's, so the Triton
    kernels may run instead (pass False with any other loop). The kernels always accumulate in fp32 with dots in
    the precision of q's dtype, whatever the autocast state."""
    kernels = use_kernels(backend, q.device, chunk_size, q.shape[-1], fused_ok)
    _record("delta_rule", kernels, q, k, v, None, beta)
    if kernels:
        from deltanet.ops.delta_rule.chunk import chunk_delta_rule

        return chunk_delta_rule(q, k, v, beta, chunk_size=chunk_size, scale=scale, initial_state=initial_state)
    return delta_rule_chunkwise(
        q, k, v, beta, chunk_size=chunk_size, scale=scale, initial_state=initial_state, loop_body=loop_body,
        params=params, init_carry=init_carry, precision=loop_precision,
    )  # fmt: skip


def gated_delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    beta: Tensor,
    chunk_size: int = 64,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    *,
    backend: str = "auto",
    loop_body: LoopBody = gated_loop_body,
    init_carry: InitCarry = default_init_carry,
    params: object | None = None,
    fused_ok: bool = True,
    loop_precision: str = "fp32",
) -> tuple[Tensor, Tensor]:
    """Gated delta rule through the chosen backend (see :func:`delta_rule`)."""
    kernels = use_kernels(backend, q.device, chunk_size, q.shape[-1], fused_ok)
    _record("gated_delta_rule", kernels, q, k, v, g, beta)
    if kernels:
        from deltanet.ops.gated_delta_rule.chunk import chunk_gated_delta_rule

        return chunk_gated_delta_rule(
            q, k, v, g, beta, chunk_size=chunk_size, scale=scale, initial_state=initial_state
        )
    return gated_delta_rule_chunkwise(
        q, k, v, g, beta, chunk_size=chunk_size, scale=scale, initial_state=initial_state, loop_body=loop_body,
        params=params, init_carry=init_carry, precision=loop_precision,
    )  # fmt: skip
