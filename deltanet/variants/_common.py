"""Helpers shared by the variant loops (not a variant: files starting with ``_`` are skipped by the registry).

Every variant changes one step of the baseline per-chunk loop (``deltanet.ops.delta_rule.baseline_loop_body``),
whose steps are the helpers of ``deltanet.ops.chunkwise``, re-exported here::

    u_i = U_i − W_i S                      corrected_values
    A_i = Q_i K_iᵀ ⊙ M                     linear_attention      (M causal, diagonal kept)
    O_i = Q_i S + A_i u_i                  read
    S   ← S + K_iᵀ u_i                     write

Row r of ``A_i u_i`` is q_r · Σ_{c≤r} k_cᵀ u_c, i.e. the read of the intra-chunk writes; so a variant that changes
*what is written* (a gate, a norm, a top-k on u) changes u in both places, and one that changes only *how the
chunk attends* changes A_i alone. All tensors here are heads-first ``[B, H, C, ...]`` fp32; padding rows have
k = v = β = 0, hence zero rows in W, U and u, and they never write to the state. Under ``loop_precision: autocast``
the matmuls' outputs are bf16; the softmax and the row norms below take their input in fp32 and return fp32 on any
device, as CUDA autocast runs them (CPU autocast would keep bf16: docs/deltanet-math.md §7).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deltanet.ops.chunkwise import (  # noqa: F401  (the baseline steps, re-exported for the variants)
    Chunk,
    corrected_values,
    linear_attention,
    read,
    scores,
    write,
    wy_representation,
)

# ---------------------------------------------------------------------------------------------------------------
# the state update


def state_delta(chunk: Chunk, u: Tensor) -> Tensor:
    """ΔS = Kᵀ u: the baseline's net change of the state over the chunk (the 'update' optimiser variants rescale)."""
    return chunk.k.transpose(-1, -2) @ u


# ---------------------------------------------------------------------------------------------------------------
# causal softmax / top-k over the chunk


def causal_softmax(logits: Tensor, allowed: Tensor) -> Tensor:
    """Row softmax of ``logits`` over ``allowed`` entries only (others get exactly 0).

    Computed in fp32. A row with no allowed entry gives a zero row, never NaN (masked logits are fp32's minimum,
    not −inf, and the result is multiplied by the mask).
    """
    masked = logits.float().masked_fill(~allowed, torch.finfo(torch.float32).min)
    return masked.softmax(dim=-1) * allowed


def topk_mask(values: Tensor, k: int, allowed: Tensor | None = None) -> Tensor:
    """Boolean mask of the ``k`` largest ``values`` per row among ``allowed`` (all allowed if fewer than k).

    Ties at the k-th value are all kept. Selection is by value, so gradients flow through the kept entries.
    """
    if allowed is None:
        allowed = torch.ones_like(values, dtype=torch.bool)
    masked = values.detach().masked_fill(~allowed, float("-inf"))
    k = min(k, values.shape[-1])
    kth = masked.topk(k, dim=-1).values[..., -1:]
    return allowed & (masked >= kth)


def cosine_scores(chunk: Chunk, eps: float) -> Tensor:
    """cos(q_r, k_c) for every pair of rows ``[B, H, C, C]`` (scale-free; zero rows give 0)."""
    return l2_normalize(chunk.q, eps) @ l2_normalize(chunk.k, eps).transpose(-1, -2)


# ---------------------------------------------------------------------------------------------------------------
# per-row normalisations


def l2_normalize(x: Tensor, eps: float) -> Tensor:
    """x / (‖x‖₂ + eps) over the last dim; a zero row stays zero with a zero (not NaN) gradient."""
    x = x.float()
    norm = x.pow(2).sum(dim=-1, keepdim=True).clamp_min(1e-30).sqrt()
    return x / (norm + eps)


def layer_norm(x: Tensor, eps: float) -> Tensor:
    """Parameter-free layer norm over the last dim: (x − mean) / sqrt(var + eps)."""
    return F.layer_norm(x.float(), x.shape[-1:], eps=eps)


def row_rms(x: Tensor) -> Tensor:
    """sqrt(mean(x²)) over the last dim, keepdim; differentiable at zero rows (gradient 0 there)."""
    return x.float().pow(2).mean(dim=-1, keepdim=True).clamp_min(1e-30).sqrt()


def valid_rows(chunk: Chunk) -> Tensor:
    """fp32 ``[C, 1]`` mask of real (non-padding) rows."""
    return chunk.valid.to(chunk.q.dtype)[:, None]


# ---------------------------------------------------------------------------------------------------------------
# recomputing the chunk's UT/WY transform on transformed keys / with a decay


def recompute_wy(chunk: Chunk, q: Tensor | None = None, k: Tensor | None = None, g_cum: Tensor | None = None) -> Chunk:
    """The chunk with (q, k, g_cum) replaced and W, U recomputed from them (same math as the chunkwise ops)::

        A = strict_lower((K_β Kᵀ) ⊙ Γ),  T = (I + A)⁻¹,  W = T (K_β ⊙ e^G),  U = T V_β     (Γ, e^G = 1 if no G)

    Lets a per-token transform of q/k (or a per-token decay) stay the exact token recurrence inside the loop.
    """
    q = chunk.q if q is None else q
    k = chunk.k if k is None else k
    w, u = wy_representation(k, chunk.v, chunk.beta, g_cum)
    return dataclasses.replace(chunk, q=q, k=k, g_cum=g_cum, w=w, u=u)


# ---------------------------------------------------------------------------------------------------------------
# learnable loop parameters


class LoopParams(nn.Module):
    """The learnable tensors of one variant's loop, registered by name (owned and counted by the mixer)."""

    def __init__(self, **inits: Tensor):
        super().__init__()
        for name, value in inits.items():
            self.register_parameter(name, nn.Parameter(value.detach().clone().float()))


def per_head(p: Tensor) -> Tensor:
    """A ``[H]`` parameter as fp32 ``[H, 1, 1]``, broadcastable against ``[B, H, C, C]`` or ``[B, H, C, 1]``."""
    return p.float()[:, None, None]


# ---------------------------------------------------------------------------------------------------------------
# pieces used by two variants each

# Error gate (error_gated_state_update, cosine_softmax_attention_error_gated_update): a per-row write gate
# g_r = σ(a_h · rms(u_r) + b_h), learnable a_h (init 0: the data decide whether large errors open or close the gate)
# and b_h (init 3: σ(3) ≈ 0.95, close to the baseline's full write at initialisation).
ERROR_GATE_SCALE_INIT = 0.0
ERROR_GATE_BIAS_INIT = 3.0


def make_error_gate_params(num_heads: int) -> LoopParams:
    return LoopParams(
        gate_scale=torch.full((num_heads,), ERROR_GATE_SCALE_INIT),
        gate_bias=torch.full((num_heads,), ERROR_GATE_BIAS_INIT),
    )


def error_gate(u: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
    """g ⊙ u with g_r = σ(scale_h · rms(u_r) + bias_h) per row (``[B, H, C, 1]``)."""
    return torch.sigmoid(per_head(scale) * row_rms(u) + per_head(bias)) * u


# Cosine softmax (cosine_softmax_attention, cosine_softmax_attention_error_gated_update): logits s_h · cos(q, k)
# with a learnable per-head log-scale (Swin-V2-style cosine attention), init log(10) (temperature 0.1), clamped at
# log(100) so the softmax cannot collapse to a hard max.
COSINE_LOGIT_SCALE_INIT = 10.0
COSINE_LOGIT_SCALE_MAX = 100.0
COSINE_EPS = 1e-6


def make_cosine_params(num_heads: int) -> LoopParams:
    return LoopParams(log_scale=torch.full((num_heads,), COSINE_LOGIT_SCALE_INIT).log())


def cosine_softmax(chunk: Chunk, log_scale: Tensor) -> Tensor:
    """Causal softmax over the chunk of s_h · cos(q_r, k_c), s_h = exp(min(log_scale_h, log 100))."""
    scale = per_head(log_scale).clamp(max=math.log(COSINE_LOGIT_SCALE_MAX)).exp()
    return causal_softmax(scale * cosine_scores(chunk, COSINE_EPS), chunk.causal_mask())
