"""The mixer's causal depthwise short convolution + SiLU, accumulated in fp32, saving only its input for the backward.

Per channel d, taps m = 0..K−1 (PyTorch's ``conv1d`` is a correlation: w[:, K−1] multiplies x_t), x_{t<0} = 0::

    pre_t = Σ_m w[:, m] ⊙ x_{t−(K−1−m)},   y_t = SiLU(pre_t)
    g_t = dy_t ⊙ SiLU'(pre_t),   SiLU'(z) = σ(z) (1 + z (1 − σ(z)))
    dx_t = Σ_m w[:, m] ⊙ g_{t+(K−1−m)}   (g_{t≥T} = 0),   dw[:, m] = Σ_{b,t} g_t ⊙ x_{t−(K−1−m)}

As fla's ``ShortConvolution`` (``fla/modules/convolution.py``): the sum in fp32 whatever the input's dtype (a bf16
input gives the fp32 result rounded once), and only x and w kept for the backward, which recomputes pre. Autograd
through the shifted sum would keep x, the padded x and pre in fp32, 12 bytes per element where this keeps 2 under
bf16 (``docs/gpu-efficiency.md``).
K shifted multiply-adds rather than ``F.conv1d``: on CPU the depthwise convolution (oneDNN) cost 1.4 ms against 0.8
ms forward and backward at the tiny scale's [16, 31, 64], and its [B, D, T] layout made the norm after it strided.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _padded(x: Tensor, lead: int, K: int) -> Tensor:
    """x ``[..., T, D]`` with ``lead`` zero rows before t = 0 and K − 1 − lead after t = T − 1."""
    return F.pad(x, (0, 0, lead, K - 1 - lead))


def _shifted_sum(padded: Tensor, w: Tensor) -> Tensor:
    """Σ_m w[:, m] ⊙ padded_{t+m} for t < T = rows − K + 1: with :func:`_padded` (``lead`` = K − 1) the
    convolution, (``lead`` = 0, the taps reversed) the backward's transposed one. ``[..., T+K−1, D]``, ``[D, K]``."""
    K = w.shape[-1]
    T = padded.shape[-2] - K + 1
    taps = w.unbind(-1)
    total = padded[..., :T, :] * taps[0]
    for m in range(1, K):
        total = total + padded[..., m : m + T, :] * taps[m]
    return total


class ShortConvSiLU(torch.autograd.Function):
    """y = SiLU(causal depthwise conv(x, w)) in x's dtype; x ``[..., T, D]``, w ``[D, K]``. Works under ``vmap``
    (the fused groups) through a generated batching rule."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, weight: Tensor) -> Tensor:
        K = weight.shape[-1]
        return F.silu(_shifted_sum(_padded(x.float(), K - 1, K), weight.float())).to(x.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor, Tensor]:
        x, weight = ctx.saved_tensors
        w32, K, T = weight.float(), weight.shape[-1], x.shape[-2]
        x_padded = _padded(x.float(), K - 1, K)  # one padding for the recomputed sum and dw
        g = torch.ops.aten.silu_backward(dy.float(), _shifted_sum(x_padded, w32))  # dy ⊙ SiLU'(pre)
        dx = _shifted_sum(_padded(g, 0, K), w32.flip(-1))  # tap m of the flipped weight is w[:, K−1−m], on g_{t+m}
        per_tap = [(g * x_padded[..., m : m + T, :]).flatten(0, -2).sum(0) for m in range(K)]
        return dx.to(x.dtype), torch.stack(per_tap, -1).to(weight.dtype)


def short_conv_silu(x: Tensor, weight: Tensor) -> Tensor:
    """SiLU(causal depthwise conv) of x ``[..., T, D]`` with ``weight`` ``[D, K]``, in x's dtype (module docstring)."""
    return ShortConvSiLU.apply(x, weight)
