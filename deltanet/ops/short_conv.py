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


def _shifted_sum(x: Tensor, w: Tensor, lead: int) -> Tensor:
    """Σ_m w[:, m] ⊙ x_{t+m−lead}, x_s = 0 outside 0 ≤ s < T: the convolution with ``lead`` = K − 1, the
    backward's transposed one with ``lead`` = 0 and the taps reversed. x ``[..., T, D]``, w ``[D, K]``, both fp32."""
    T, K = x.shape[-2], w.shape[-1]
    padded = F.pad(x, (0, 0, lead, K - 1 - lead))
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
        return F.silu(_shifted_sum(x.float(), weight.float(), weight.shape[-1] - 1)).to(x.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor, Tensor]:
        x, weight = ctx.saved_tensors
        x32, w32 = x.float(), weight.float()
        K = w32.shape[-1]
        g = torch.ops.aten.silu_backward(dy.float(), _shifted_sum(x32, w32, K - 1))  # dy ⊙ SiLU'(pre)
        dx = _shifted_sum(g, w32.flip(-1), 0)  # tap m of the flipped weight is w[:, K−1−m], reading g_{t+m}
        x_padded = F.pad(x32, (0, 0, K - 1, 0))
        T = x.shape[-2]
        per_tap = [(g * x_padded[..., m : m + T, :]).flatten(0, -2).sum(0) for m in range(K)]
        return dx.to(x.dtype), torch.stack(per_tap, -1).to(weight.dtype)


def short_conv_silu(x: Tensor, weight: Tensor) -> Tensor:
    """SiLU(causal depthwise conv) of x ``[..., T, D]`` with ``weight`` ``[D, K]``, in x's dtype (module docstring)."""
    return ShortConvSiLU.apply(x, weight)
