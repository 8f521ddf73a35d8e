"""Chunked delta rule on our Triton kernels (forward + backward), same semantics as :func:`delta_rule_chunkwise`.

The kernels live in :mod:`deltanet.ops.kernels` (shared with the gated rule, which adds the decay).
"""

from __future__ import annotations

from torch import Tensor

from deltanet.ops.kernels.function import chunk_rule


def chunk_delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    chunk_size: int = 64,
    scale: float | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Delta rule S_t = S_{t-1} + k_tᵀ β_t (v_t − k_t S_{t-1}), o_t = q_t S_t (q scaled by ``scale``, default 1/√Dk).

    Layout ``[B, T, H, D]``, β ``[B, T, H]``, initial/final state ``[B, H, Dk, Dv]`` (final state fp32); any T;
    chunk_size ∈ {16, 32, 64}; fp32/fp16/bf16 inputs (bf16 on CUDA only), fp32 accumulation; o in the input dtype.
    Differentiable in q, k, v, β and the initial state.
    """
    return chunk_rule(q, k, v, beta, chunk_size=chunk_size, scale=scale, initial_state=initial_state)
