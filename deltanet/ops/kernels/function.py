"""The kernel stages wired into a forward and a backward pass, the ``autograd.Function``, and ``chunk_rule``, the
checked entry point of ``chunk_delta_rule`` (g = None) and ``chunk_gated_delta_rule``."""

from __future__ import annotations

import torch
from torch import Tensor

from deltanet.ops.chunkwise import check_inputs
from deltanet.ops.kernels.backward import chunk_grads
from deltanet.ops.kernels.chunk_output import output_forward
from deltanet.ops.kernels.chunk_state import state_backward, state_forward
from deltanet.ops.kernels.launch import CHUNK_SIZES, FAULTS, MAX_KEY_DIM, interpreter_enabled, kernels_fit, launch_meta
from deltanet.ops.kernels.wy import wy_forward

# Value head dims per kernel launch; wider value heads run in blocks (see chunk_rule). The kernels would loop over
# wider ones themselves, but their state offsets (bh·NT + n)·Dk·Dv are int32: at the reference profile's largest
# launch (batch 128 × 6 heads, seq 1024 at chunk 32, Dk 256) Dv = 512 reaches 3.2e9 > 2^31, a block of 256 1.6e9.
MAX_HEAD_DIM = 256


def chunk_forward(q, k, v, g, beta, scale, h0, chunk_size, drop_update=False):
    """Forward pass; returns (o, final_state, saved) with ``saved`` = the intermediates the backward reuses."""
    m = launch_meta(q, v, chunk_size)
    w, u, tm, p, gc = wy_forward(q, k, v, beta, g, scale, m)
    h, vn, ht = state_forward(k, w, u, gc, h0, m, drop_update)
    o = output_forward(q, v, gc, p, h, vn, scale, m)
    return o, ht, (w, u, tm, p, gc)


def chunk_backward(q, k, v, g, beta, scale, h0, chunk_size, saved, do, dht):
    """Backward pass; returns (dq, dk, dv, dg or None, dbeta, dh0 fp32)."""
    m = launch_meta(q, v, chunk_size)
    w, u, _, p, gc = saved
    h, vn, _ = state_forward(k, w, u, gc, h0, m)  # recompute the per-chunk states instead of keeping them
    do = do.contiguous()
    dh, dvn, dh0 = state_backward(q, k, w, p, gc, do, dht, scale, m)
    dq, dk, dv, dg, dbeta = chunk_grads(q, k, v, g, beta, scale, saved, (h, dh, vn, dvn), do, m)
    return dq, dk, dv, dg, dbeta, dh0


class ChunkDeltaRuleFunction(torch.autograd.Function):
    """Autograd wrapper over the forward/backward kernels; ``g is None`` = the ungated delta rule.

    ``forward`` returns (o, final state, *intermediates the backward reuses); :func:`chunk_rule` hands out the first
    two. Under ``torch.func.vmap`` (fused runs: the members of a group, ``deltanet/training/fused.py``) the members are
    folded into the batch dimension: the kernels have no parameters and treat every batch row alike, so one launch
    of batch R·B computes all R members."""

    @staticmethod
    def forward(q, k, v, g, beta, scale, initial_state, chunk_size, drop_update):
        q, k, v, beta = (x.contiguous() for x in (q, k, v, beta))
        g = g.contiguous() if g is not None else None
        h0 = initial_state.contiguous() if initial_state is not None else None
        o, ht, saved = chunk_forward(q, k, v, g, beta, scale, h0, chunk_size, drop_update)
        return (o, ht, *saved)

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, g, beta, scale, initial_state, chunk_size, _ = inputs
        saved = output[2:]
        ctx.mark_non_differentiable(*(t for t in saved if t is not None))
        # an output nobody used gets None, not a zero-filled gradient: the intermediates' gradients are never read,
        # and without a final-state gradient bwd_dh_kernel starts from zero itself (HAS_DHT)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(q, k, v, g, beta, initial_state, *saved)
        ctx.scale, ctx.chunk_size = scale, chunk_size

    @staticmethod
    def backward(ctx, do, dht, *_):
        q, k, v, g, beta, h0, *saved = ctx.saved_tensors
        q, k, v, beta = (x.contiguous() for x in (q, k, v, beta))
        g = g.contiguous() if g is not None else None
        h0_in = h0.contiguous() if h0 is not None else None
        dht = dht.contiguous() if dht is not None else None
        do = do if do is not None else torch.zeros_like(v)  # only the final state was used: o's gradient is 0
        dq, dk, dv, dg, dbeta, dh0 = chunk_backward(q, k, v, g, beta, ctx.scale, h0_in, ctx.chunk_size, saved, do,
                                                    dht)  # fmt: skip
        dh0 = dh0.to(h0.dtype) if h0 is not None else None
        return dq, dk, dv, dg, dbeta, None, dh0, None, None

    @staticmethod
    def vmap(info, in_dims, q, k, v, g, beta, scale, initial_state, chunk_size, drop_update):
        """R members (vmap level) × batch B → one launch of batch R·B; outputs split back into [R, B·…, …]."""
        R = info.batch_size

        def fold(x, dim):
            if x is None:
                return None
            x = x.expand(R, *x.shape) if dim is None else x.movedim(dim, 0)
            return x.reshape(R * x.shape[1], *x.shape[2:])

        args = [fold(x, d) for x, d in zip((q, k, v, g, beta), in_dims[:5])]
        h0 = fold(initial_state, in_dims[6])
        out = ChunkDeltaRuleFunction.apply(*args, scale, h0, chunk_size, drop_update)
        out = tuple(None if t is None else t.reshape(R, -1, *t.shape[1:]) for t in out)
        return out, tuple(None if t is None else 0 for t in out)


def chunk_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    *,
    g: Tensor | None = None,
    chunk_size: int = 64,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    fault: str | None = None,
) -> tuple[Tensor, Tensor]:
    """The chunked (gated, when ``g`` is given) delta rule on the kernels; checks its inputs first.

    ``fault``: None, or one of :data:`~deltanet.ops.kernels.launch.FAULTS` — a deliberately wrong kernel, passed
    only by ``deltanet verify-kernels --inject-fault`` to show that the check catches it."""
    B, T, H, DK, DV = check_inputs(q, k, v, beta, g=g, initial_state=initial_state)
    if chunk_size not in CHUNK_SIZES:
        raise ValueError(f"chunk_size must be one of {CHUNK_SIZES} for the Triton kernels, got {chunk_size!r}")
    if not kernels_fit(chunk_size, DK):
        raise ValueError(f"the Triton kernels take key head dims up to {MAX_KEY_DIM[chunk_size]} at chunk_size "
                         f"{chunk_size} (MAX_KEY_DIM {MAX_KEY_DIM}), got Dk={DK}")  # fmt: skip
    if fault is not None and fault not in FAULTS:
        raise ValueError(f"fault must be None or one of {FAULTS}, got {fault!r}")
    interpreted = interpreter_enabled()
    if q.device.type != "cuda" and not interpreted:
        raise RuntimeError(
            "the Triton kernels need a CUDA device; on CPU set TRITON_INTERPRET=1 before triton is imported, "
            "or call deltanet.ops.kernels.launch.enable_interpreter() (slow, for tests), "
            "or use the naive op (kernels: naive)"
        )
    if q.dtype == torch.bfloat16 and interpreted:
        raise RuntimeError("bf16 is broken in the Triton interpreter; use fp32/fp16 on CPU")
    scale = DK**-0.5 if scale is None else float(scale)
    return run_kernels(q, k, v, beta, g, scale, initial_state, chunk_size, fault == "drop_state_update")


def run_kernels(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, g: Tensor | None, scale: float,
                initial_state: Tensor | None, chunk_size: int, drop_update: bool) -> tuple[Tensor, Tensor]:  # fmt: skip
    """(o, final state) from the kernels, inputs already checked by :func:`chunk_rule` (``benchmarks/kernel_plan.py``
    calls it on meta tensors to record the launches a GPU call makes)."""
    DV = v.shape[-1]
    if DV > MAX_HEAD_DIM:
        # value columns are independent (column j of S and o depends on column j of v only), so wide value heads
        # (fla's Gated DeltaNet: 512) run as blocks of MAX_HEAD_DIM; autograd sums the blocks' dq, dk, dβ, dg
        blocks = torch.arange(DV, device=v.device).split(MAX_HEAD_DIM)
        parts = [run_kernels(q, k, v[..., cols], beta, g, scale,
                             None if initial_state is None else initial_state[..., cols], chunk_size, drop_update)
                 for cols in blocks]  # fmt: skip
        return torch.cat([o for o, _ in parts], dim=-1), torch.cat([s for _, s in parts], dim=-1)
    o, ht, *_ = ChunkDeltaRuleFunction.apply(q, k, v, g, beta, scale, initial_state, chunk_size, drop_update)
    return o, ht
