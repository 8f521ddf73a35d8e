"""Chunked gated delta rule on our Triton kernels (forward + backward), same semantics as
:func:`gated_delta_rule_chunkwise`. Kernels: :mod:`deltanet.ops.kernels` (``USE_G`` path)."""

from __future__ import annotations

from torch import Tensor

from deltanet.ops.kernels.function import chunk_rule


def chunk_gated_delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    beta: Tensor,
    chunk_size: int = 64,
    scale: float | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Gated delta rule S_t = e^{g_t}(I − β_t k_tᵀ k_t) S_{t-1} + β_t k_tᵀ v_t, o_t = q_t S_t (g ≤ 0, log decay).

    Layout ``[B, T, H, D]``, g and β ``[B, T, H]``, state ``[B, H, Dk, Dv]`` (final state fp32); any T;
    chunk_size ∈ {16, 32, 64}; fp32/fp16/bf16 inputs (bf16 on CUDA only), fp32 accumulation.
    Differentiable in q, k, v, g, β and the initial state.
    """
    return chunk_rule(q, k, v, beta, g=g, chunk_size=chunk_size, scale=scale, initial_state=initial_state)
