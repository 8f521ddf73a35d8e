"""The mixer's short convolution at a job's shapes: ours (``deltanet/ops/short_conv.py``: fp32 sum, keeps only its
input) against ``F.conv1d`` (the form before 2026-12-07), forward + backward under bf16 autocast.

    python benchmarks/short_conv.py [--scale full] [--seq-len 128] [--steps 20] [--warmup 3] [--device auto]

One row per baseline model and convolution width (channels: heads × key dim for q and k, heads × value dim for v,
``ModelConfig.layer_shape`` of the scale's model), on a batch of a job's fused group (the scale's batch × its runs
per setting, the members folded into the batch): ``ours_ms`` and ``conv1d_ms`` per forward + backward, ``ratio``
= conv1d_ms ÷ ours_ms (above 1: ours is faster), the peak memory each adds above its inputs (CUDA only), and
``max_abs_diff`` of the two outputs (ours rounds the fp32 sum once; ``F.conv1d`` under autocast computes in bf16).
Without CUDA it runs the same code on the CPU (bf16 autocast), at whatever scale is named.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from rows import emit, expect  # noqa: E402  (benchmarks/ is this script's folder)
from train_throughput import SEQ_LEN  # noqa: E402

from deltanet.config import load_config  # noqa: E402
from deltanet.model import ModelConfig, ShortConv  # noqa: E402
from deltanet.ops.short_conv import short_conv_silu  # noqa: E402
from deltanet.training.device import DEVICE_CHOICES, training_device  # noqa: E402
from deltanet.variants import get_variant  # noqa: E402
from deltanet.variants.catalog import BASELINE_VARIANTS  # noqa: E402

CONV_SIZE = ModelConfig.conv_size


def conv1d_silu(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The form before 2026-12-07: a depthwise ``F.conv1d`` over [B, D, T] with the weight in x's dtype, then SiLU."""
    K = weight.shape[-1]
    y = F.conv1d(x.transpose(1, 2), weight[:, None, :].to(x.dtype), None, 1, K - 1, 1, weight.shape[0])
    return F.silu(y[..., : x.shape[1]].transpose(1, 2))


def widths(model: dict) -> dict[str, int]:
    """``"<model> <projections>"`` -> channels, one entry per distinct width of each baseline's convolutions."""
    out = {}
    for variant in BASELINE_VARIANTS.values():
        cfg = ModelConfig(vocab_size=16, **{**model, "variant": variant})
        H, Dk, Dv = cfg.layer_shape(get_variant(variant).mixer)
        names = {H * Dk: "q,k", H * Dv: "v"} if Dk != Dv else {H * Dk: "q,k,v"}
        out.update({f"{variant} {projections}": channels for channels, projections in names.items()})
    return out


def measure(fn, x: torch.Tensor, w: torch.Tensor, dy: torch.Tensor, steps: int, warmup: int):
    """(ms per forward + backward, MiB of peak memory above what was allocated before, CUDA only; else NaN)."""
    cuda = x.device.type == "cuda"
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        for _ in range(warmup):
            torch.autograd.grad(fn(x, w), (x, w), dy)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        started = time.perf_counter()
        for _ in range(steps):
            torch.autograd.grad(fn(x, w), (x, w), dy)
        if cuda:
            torch.cuda.synchronize()
    ms = (time.perf_counter() - started) / steps * 1e3
    peak = (torch.cuda.max_memory_allocated() - before) / 2**20 if cuda else math.nan
    return ms, peak


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=os.path.join(REPO, "config.yaml"))
    p.add_argument("--scale", default="full")
    p.add_argument("--seq-len", type=int, default=SEQ_LEN)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    scale = cfg["scales"][args.scale]
    device = training_device(args.device)
    optim = scale["optim"]
    batch = optim["batch_size"] * len(optim["lrs"]) * len(optim["weight_decays"]) * len(cfg["seeds"])
    cases = widths(scale["model"])
    expect("case", list(cases))
    for case, channels in cases.items():
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(batch, args.seq_len, channels, generator=generator).to(device, torch.bfloat16)
        w = ShortConv(channels, CONV_SIZE).weight.detach()  # the model's init
        x, w = x.requires_grad_(), w.to(device).requires_grad_()
        dy = torch.randn(x.shape, generator=generator).to(device, torch.bfloat16)
        started = time.perf_counter()
        ours_ms, ours_peak = measure(short_conv_silu, x, w, dy, args.steps, args.warmup)
        conv_ms, conv_peak = measure(conv1d_silu, x, w, dy, args.steps, args.warmup)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            diff = (short_conv_silu(x, w).float() - conv1d_silu(x, w).float()).abs().max().item()
        emit(case=case, channels=channels, batch=batch, seq_len=args.seq_len, device=device.type,
             ours_ms=round(ours_ms, 4), conv1d_ms=round(conv_ms, 4), ratio=round(conv_ms / ours_ms, 3),
             ours_peak_mib=round(ours_peak, 1), conv1d_peak_mib=round(conv_peak, 1), max_abs_diff=diff,
             measure_s=round(time.perf_counter() - started, 2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
