"""Backend dispatch between the naive chunk loop and our Triton kernels (``config.yaml`` ``kernels:``).

- ``naive``: always the readable PyTorch loop (runs every variant's loop body).
- ``triton``: the fused kernels (:mod:`deltanet.ops.common_kernels`) for variants that declare
  ``USES_KERNEL = True``; needs CUDA, or a CPU with ``TRITON_INTERPRET=1`` (slow; for tests).
- ``auto``: ``triton`` on CUDA, ``naive`` elsewhere.

A variant whose ``USES_KERNEL`` is False always runs its own loop through the naive op, whatever the backend.
The kernel modules (and so triton) are imported lazily: triton decides interpreter-or-compiler when a kernel is
decorated, so importing them here eagerly would freeze that choice before tests or ``verify`` can set it.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings

import torch
from torch import Tensor

BACKENDS = ("auto", "triton", "naive")
KERNEL_CHUNK_SIZES = (16, 32, 64)


def _triton_interpreted() -> bool | None:
    """None if triton is not imported yet; else whether it was imported in interpreter mode (its own standard
    library, e.g. ``tl.zeros``, is decorated at import, so the switch must be set before ``import triton``)."""
    if "triton" not in sys.modules:
        return None
    import triton.language as tl

    return type(tl.zeros).__name__ == "InterpretedFunction"


def enable_interpreter() -> None:
    """Run the Triton kernels in the CPU interpreter by setting ``TRITON_INTERPRET=1``.

    Triton reads the switch when a function is decorated, including its own standard library at ``import triton``,
    so this only works before triton is imported in this process; otherwise it raises RuntimeError (run in a fresh
    process with ``TRITON_INTERPRET=1``). Our kernel module is reloaded if it was decorated for the compiler."""
    state = _triton_interpreted()
    if state is False:
        raise RuntimeError(
            "triton was already imported in this process without TRITON_INTERPRET=1, so its kernels cannot run on "
            "CPU here; start a fresh process with TRITON_INTERPRET=1 set"
        )
    os.environ["TRITON_INTERPRET"] = "1"
    module = sys.modules.get("deltanet.ops.common_kernels")
    if module is not None and not module.INTERPRETED:
        importlib.reload(module)


def interpreter_enabled() -> bool:
    """Whether the kernels run (or will run, once imported) in the Triton interpreter in this process."""
    state = _triton_interpreted()
    module = sys.modules.get("deltanet.ops.common_kernels")
    if module is not None:
        return bool(module.INTERPRETED) and state is not False
    if state is not None:
        return state
    return os.environ.get("TRITON_INTERPRET", "0").lower() not in ("", "0", "false", "off", "no")


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


def _use_kernel(backend: str, device: torch.device, chunk_size: int, variant) -> bool:
    if variant is not None and not variant.uses_kernel:
        return False
    resolved = resolve_backend(backend, device)
    if resolved == "triton" and chunk_size not in KERNEL_CHUNK_SIZES:
        if backend == "auto":
            warnings.warn(f"chunk_size {chunk_size} has no Triton kernel (needs {KERNEL_CHUNK_SIZES}); using naive")
            return False
        raise ValueError(f"kernels: triton supports chunk_size in {KERNEL_CHUNK_SIZES}, got {chunk_size}")
    return resolved == "triton"


def _check_mixer(variant, mixer: str) -> None:
    if variant is not None and variant.mixer != mixer:
        raise ValueError(f"variant {variant.name!r} has mixer {variant.mixer!r}, not {mixer!r}")


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
    variant=None,
    params: object | None = None,
    loop_precision: str = "fp32",
) -> tuple[Tensor, Tensor]:
    """Delta rule through the chosen backend. ``variant`` (a :class:`deltanet.variants.Variant`, default the
    baseline) supplies the loop body for the naive path; ``params`` its learnable parameters; ``loop_precision``
    how the naive path computes under autocast (:func:`deltanet.ops.chunkwise.loop_precision`). The Triton kernels
    always accumulate in fp32 with dots in the precision of q's dtype, whatever the autocast state."""
    _check_mixer(variant, "delta")
    if _use_kernel(backend, q.device, chunk_size, variant):
        from deltanet.ops.delta_rule.chunk import chunk_delta_rule

        return chunk_delta_rule(q, k, v, beta, chunk_size=chunk_size, scale=scale, initial_state=initial_state)
    from deltanet.ops.delta_rule.naive import delta_rule_chunkwise

    loop = {} if variant is None else {"loop_body": variant.loop_body, "init_carry": variant.init_carry}
    return delta_rule_chunkwise(
        q, k, v, beta, chunk_size=chunk_size, scale=scale, initial_state=initial_state, params=params,
        precision=loop_precision, **loop,
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
    variant=None,
    params: object | None = None,
    loop_precision: str = "fp32",
) -> tuple[Tensor, Tensor]:
    """Gated delta rule through the chosen backend (see :func:`delta_rule`)."""
    _check_mixer(variant, "gated")
    if _use_kernel(backend, q.device, chunk_size, variant):
        from deltanet.ops.gated_delta_rule.chunk import chunk_gated_delta_rule

        return chunk_gated_delta_rule(
            q, k, v, g, beta, chunk_size=chunk_size, scale=scale, initial_state=initial_state
        )
    from deltanet.ops.gated_delta_rule.naive import gated_delta_rule_chunkwise

    loop = {} if variant is None else {"loop_body": variant.loop_body, "init_carry": variant.init_carry}
    return gated_delta_rule_chunkwise(
        q, k, v, g, beta, chunk_size=chunk_size, scale=scale, initial_state=initial_state, params=params,
        precision=loop_precision, **loop,
    )  # fmt: skip
