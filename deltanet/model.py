"""The MAD models with DeltaNet / Gated DeltaNet sequence mixers, on one screen.

``LanguageModel``: token embedding → pre-norm residual blocks ``x ← x + layer(RMSNorm(x))`` with layers
``mixer, swiglu, mixer, swiglu`` (the reference table's "4layer") → RMSNorm → untied head. No positional embedding.
``AutoEncoder`` (compression task only): the same encoder, pooled at the last position, then a fixed sin/cos
position embedding per output position and MAD's MLP decoder (MAD-lab ``mad/model/auto_encoder.py``).

Mixer (fla ``fla/layers/delta_net.py`` / ``gated_deltanet.py``; ``docs/deltanet-math.md`` §3): q, k, v
projections, causal depthwise conv (kernel 4) + SiLU, L2-normalised q and k, β = σ(W_β x), the variant's chunkwise
loop, per-head RMSNorm (gated: RMSNorm(o)·swish(W_g x)), output projection. Gated DeltaNet adds the Mamba-2 decay
g = −exp(A_log)·softplus(W_a x + dt_bias).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deltanet.ops.chunkwise import LOOP_PRECISIONS
from deltanet.ops.dispatch import BACKENDS, delta_rule, gated_delta_rule
from deltanet.ops.short_conv import short_conv_silu
from deltanet.variants import Variant, get_variant

LAYER_KINDS = ("mixer", "swiglu")


INITS = ("normal", "mad_head")
LAYER_SHAPE_KEYS = ("num_heads", "head_dim", "expand_v")


@dataclass(frozen=True)
class ModelConfig:
    """The model's shape and the fidelity choices of docs/fidelity.md (config.yaml ``fidelity_profiles``)."""

    vocab_size: int
    variant: str = "delta_net_4layer"
    dim: int = 128  # MAD default width
    num_heads: int = 4  # the DeltaNet mixer: 4 heads × 32 = 128 (fla DeltaNet defaults at width 128)
    head_dim: int = 32
    expand_v: int = 1  # value head dim = head_dim · expand_v
    # the Gated DeltaNet mixer's {num_heads, head_dim, expand_v}; None = the DeltaNet shape (equal state size)
    gated: dict | None = None
    chunk_size: int = 64
    layers: tuple[str, ...] = ("mixer", "swiglu", "mixer", "swiglu")
    conv_size: int = 4
    norm_eps: float = 1e-5
    # normal: Linear weights and embeddings N(0, init_std) (MAD at paper time); mad_head: Linear weights keep
    # PyTorch's default init, embeddings N(0, init_std) (mad-lab since 756b19f); biases zero in both
    init: str = "normal"
    init_std: float = 0.02
    head_bias: bool = False  # mad-lab's unembedding Linear has a (zero-initialised) bias
    max_length: int = 128  # AutoEncoder output length (the task's seq_len)
    kernels: str = "naive"  # auto | triton | naive (deltanet/ops/dispatch.py); Triton only for USES_KERNEL variants
    loop_precision: str = "fp32"  # fp32 | autocast: the naive chunk loop under autocast (deltanet/ops/chunkwise.py)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        sizes = ("vocab_size", "dim", "num_heads", "head_dim", "expand_v", "chunk_size", "conv_size", "max_length")
        for name in sizes:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
        if self.gated is not None and (set(self.gated) != set(LAYER_SHAPE_KEYS) or not all(
                isinstance(v, int) and v > 0 for v in self.gated.values())):  # fmt: skip
            raise ValueError(f"ModelConfig.gated must map {LAYER_SHAPE_KEYS} to positive ints, got {self.gated!r}")
        for name, allowed in (("kernels", BACKENDS), ("loop_precision", LOOP_PRECISIONS), ("init", INITS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"ModelConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        bad = [kind for kind in self.layers if kind not in LAYER_KINDS]
        if bad:
            raise ValueError(f"ModelConfig.layers has unknown kinds {bad}; allowed: {LAYER_KINDS}")

    def layer_shape(self, mixer: str) -> tuple[int, int, int]:
        """(heads, key head dim, value head dim) of the ``mixer`` layer."""
        shape = self.gated if mixer == "gated" and self.gated is not None else {
            "num_heads": self.num_heads, "head_dim": self.head_dim, "expand_v": self.expand_v}  # fmt: skip
        return shape["num_heads"], shape["head_dim"], shape["head_dim"] * shape["expand_v"]


class ShortConv(nn.Module):
    """Causal depthwise conv over time + SiLU: y_t = SiLU(Σ_{j<K} w_j ⊙ x_{t−j}) (x_{t<0} = 0). Input/output [B, T, D].

    Summed in fp32 and returned in x's dtype, keeping only x for the backward (``deltanet/ops/short_conv.py``, as fla's
    ``ShortConvolution`` kernel). Weight [D, K], initialised as ``nn.Conv1d`` initialises a depthwise kernel: U(±1/√K).
    """

    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, kernel_size).uniform_(-kernel_size**-0.5, kernel_size**-0.5))

    def forward(self, x: Tensor) -> Tensor:
        return short_conv_silu(x, self.weight)


class RMSNorm(nn.RMSNorm):
    """x / sqrt(mean(x²) + eps) · w, computed in fp32 and returned in x's dtype (as fla's norms do).

    Under bf16 autocast x is bf16 and w fp32: torch's fused ``rms_norm`` refuses mixed dtypes (a warning every step)
    and runs as several unfused kernels; in fp32 both match and the fused kernel runs."""

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x.float(), self.normalized_shape, self.weight, self.eps).to(x.dtype)


def l2_norm(x: Tensor) -> Tensor:
    """x / max(‖x‖₂, 1e-12) over the last dim, computed in fp32 and returned in x's dtype (as fla's fused norm,
    ``fla/modules/l2norm.py``). ``F.normalize`` alone returns fp32 under CUDA autocast (its norm is on autocast's
    fp32 list, not on CPU's): q and k would reach the kernels in fp32 beside bf16 v and β (deltanet-math.md §7)."""
    return F.normalize(x.float(), dim=-1).to(x.dtype)


class DeltaNetMixer(nn.Module):
    """DeltaNet (``variant.mixer == "delta"``) or Gated DeltaNet (``"gated"``) mixer running the variant's loop."""

    def __init__(self, cfg: ModelConfig, variant: Variant):
        super().__init__()
        self.cfg, self.variant = cfg, variant
        self.shape = H, Dk, Dv = cfg.layer_shape(variant.mixer)
        d = cfg.dim
        self.q_proj, self.k_proj = (nn.Linear(d, H * Dk, bias=False) for _ in range(2))
        self.v_proj = nn.Linear(d, H * Dv, bias=False)
        self.b_proj = nn.Linear(d, H, bias=False)
        self.q_conv, self.k_conv = (ShortConv(H * Dk, cfg.conv_size) for _ in range(2))
        self.v_conv = ShortConv(H * Dv, cfg.conv_size)
        self.o_norm = RMSNorm(Dv, eps=cfg.norm_eps)
        self.o_proj = nn.Linear(H * Dv, d, bias=False)
        self.gated = variant.mixer == "gated"
        if self.gated:
            self.a_proj = nn.Linear(d, H, bias=False)
            self.g_proj = nn.Linear(d, H * Dv, bias=False)
            # Mamba-2 decay init (fla gated_deltanet.py): A ~ U(0, 16); dt log-uniform in [1e-3, 0.1], floor 1e-4.
            self.A_log = nn.Parameter(torch.log(torch.empty(H).uniform_(0, 16)))
            dt = torch.exp(torch.rand(H) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
            self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(dt)
        self.loop_params = variant.make_params(H, Dk, Dv) if variant.make_params else None

    def forward(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        H, Dk, Dv = self.shape
        q = l2_norm(self.q_conv(self.q_proj(x)).view(B, T, H, Dk))
        k = l2_norm(self.k_conv(self.k_proj(x)).view(B, T, H, Dk))
        v = self.v_conv(self.v_proj(x)).view(B, T, H, Dv)
        beta = torch.sigmoid(self.b_proj(x))
        # naive op with the variant's loop, or the Triton kernel when the variant declares USES_KERNEL
        loop = dict(
            chunk_size=self.cfg.chunk_size, backend=self.cfg.kernels, loop_body=self.variant.loop_body,
            init_carry=self.variant.init_carry, params=self.loop_params, fused_ok=self.variant.uses_kernel,
            loop_precision=self.cfg.loop_precision,
        )  # fmt: skip
        if self.gated:
            g = -self.A_log.float().exp() * F.softplus(self.a_proj(x).float() + self.dt_bias)
            o, _ = gated_delta_rule(q, k, v, g, beta, **loop)
            o = self.o_norm(o) * F.silu(self.g_proj(x).view(B, T, H, Dv))
        else:
            o, _ = delta_rule(q, k, v, beta, **loop)
            o = self.o_norm(o)
        return self.o_proj(o.reshape(B, T, H * Dv).to(x.dtype))


class BiasedLinear(nn.Linear):
    """x Wᵀ + b with the bias added in the product's dtype, as autocast's linear does. Under ``torch.func.vmap``
    (fused runs) autocast's linear becomes a bf16 product plus an fp32 bias, which would promote the output to fp32."""

    def forward(self, x: Tensor) -> Tensor:
        y = F.linear(x, self.weight)
        return y if self.bias is None else y + self.bias.to(y.dtype)


class SwiGLU(nn.Module):
    """Channel mixer W_2 (SiLU(W_1 x) ⊙ W_3 x); inner width 2·d·4/3 rounded up to a multiple of 16 (352 at d=128)."""

    def __init__(self, dim: int):
        super().__init__()
        inner = 16 * math.ceil(2 * dim * 4 / 3 / 16)
        self.w1, self.w3 = nn.Linear(dim, inner, bias=False), nn.Linear(dim, inner, bias=False)
        self.w2 = nn.Linear(inner, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    """Pre-norm residual: x ← x + layer(RMSNorm(x))."""

    def __init__(self, cfg: ModelConfig, kind: str, variant: Variant):
        super().__init__()
        self.norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.layer = DeltaNetMixer(cfg, variant) if kind == "mixer" else SwiGLU(cfg.dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.layer(self.norm(x))


class Backbone(nn.Module):
    """Token embedding + the block stack; returns hidden states [B, T, dim]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        variant = get_variant(cfg.variant)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg, kind, variant) for kind in cfg.layers)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return x


def init_weights(model: nn.Module, cfg: ModelConfig) -> None:
    """MAD init: embeddings N(0, init_std); Linear weights N(0, init_std) (``normal``) or PyTorch's default
    (``mad_head``); Linear biases zero; norms, convs and decay params keep theirs."""
    for module in model.modules():
        if isinstance(module, nn.Embedding) or (isinstance(module, nn.Linear) and cfg.init == "normal"):
            nn.init.normal_(module.weight, std=cfg.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)


class LanguageModel(nn.Module):
    """Next-token model: logits [B, T, vocab] for tokens [B, T]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg)
        self.norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.head = BiasedLinear(cfg.dim, cfg.vocab_size, bias=cfg.head_bias)
        init_weights(self, cfg)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.head(self.norm(self.backbone(tokens)))


def sincos_positions(length: int, dim: int) -> Tensor:
    """Fixed sin/cos table [length, dim]: even channels sin(p·ω_i), odd cos(p·ω_i), ω_i = 10000^(−2i/dim)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2], table[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq[: dim // 2])
    return table


class AutoEncoder(nn.Module):
    """Compression model: encode, pool the last position, decode every position (logits [B, max_length, vocab])."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.encoder = Backbone(cfg)
        self.register_buffer("positions", sincos_positions(cfg.max_length, d), persistent=False)
        self.decoder = nn.Sequential(
            RMSNorm(d, eps=cfg.norm_eps), BiasedLinear(d, d), nn.GELU(),
            RMSNorm(d, eps=cfg.norm_eps), BiasedLinear(d, d), nn.GELU(),
            RMSNorm(d, eps=cfg.norm_eps), BiasedLinear(d, cfg.vocab_size),
        )  # fmt: skip
        init_weights(self, cfg)

    def forward(self, tokens: Tensor) -> Tensor:
        pooled = self.encoder(tokens)[:, -1:, :]  # [B, 1, d]
        return self.decoder(pooled + self.positions[: tokens.shape[1]])


def build_model(cfg: ModelConfig, autoencoder: bool = False) -> nn.Module:
    return AutoEncoder(cfg) if autoencoder else LanguageModel(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
