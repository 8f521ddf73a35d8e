"""The GPU job's code path, run on CPU: bf16 autocast around the model, the ops' own precision inside it.

A full-scale job trains under ``torch.autocast(<device>, bfloat16)`` (``deltanet/training/loop.py``
``precision_context``). These tests take that same path on CPU with ``torch.autocast("cpu", ...)`` made to run
CUDA autocast's fp32 ops in fp32 as a GPU does (``cuda_autocast.py``; checked here against CUDA's own autocast
kernels on fake CUDA tensors): every registered model (parametrised over the registry, so a new variant file is
covered) for one full training step at the full scale's model shape, with the dtypes that reach the mixer's op; the
baselines through the Triton kernels (interpreter; fp16 autocast, since bf16 is broken in the interpreter); and one
``deltanet train`` job with ``optim.precision: bf16``.
"""

from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from cuda_autocast import cuda_fp32_list
from test_train import stop_after, train, write_config

from deltanet.config import load_config
from deltanet.model import LanguageModel, ModelConfig
from deltanet.ops.chunkwise import forward_substitution, ut_transform
from deltanet.ops.delta_rule import delta_rule_chunkwise
from deltanet.ops.dispatch import record_input_dtypes
from deltanet.ops.testing import make_inputs, rms_ratio, tolerance
from deltanet.training.fused import FusedModel
from deltanet.training.loop import precision_context, train_step
from deltanet.training.optim import StackedAdamW
from deltanet.variants import variant_names

REPO = Path(__file__).resolve().parents[1]
FULL_MODEL = load_config(REPO / "config.yaml")["scales"]["full"]["model"]  # the reference profile, resolved
VOCAB = 16


def training_step(cfg: ModelConfig, amp: torch.dtype, seq_len: int, batch: int = 2) -> tuple[torch.Tensor, dict, list]:
    """The jobs' own ``train_step`` on a group of one (forward under CPU autocast with CUDA's fp32 list, backward,
    AdamW); returns (the logits before the step, {name: grad}, the dtypes that reached the mixer's op)."""
    torch.manual_seed(0)
    fused = FusedModel.stack([LanguageModel(cfg)])
    optimizer = StackedAdamW(fused.parameters(), lr=[1e-3], weight_decay=[0.01])
    tokens = torch.randint(0, VOCAB, (1, batch, seq_len), generator=torch.Generator().manual_seed(1))
    with cuda_fp32_list(), record_input_dtypes() as dtypes:
        with torch.no_grad(), precision_context("cpu", amp):
            logits = fused.logits(tokens)[0]
        before = [p.detach().clone() for p in fused.parameters()]
        assert torch.isfinite(train_step(fused, optimizer, tokens, tokens.roll(-1, -1), amp)).all()
    assert any(not torch.equal(b, p) for b, p in zip(before, fused.parameters())), "the step changed nothing"
    return logits, {n: p.grad[0] for n, p in fused.params.items()}, dtypes


def assert_mixer_inputs(dtypes: list[dict], low: str, path: str) -> None:
    """q, k, v and β reach the mixer's op in autocast's low dtype; a decay g in fp32 (as fla's layers give it)."""
    assert dtypes and all(d["path"] == path for d in dtypes), dtypes
    for d in dtypes:
        assert (d["q"], d["k"], d["v"], d["beta"]) == (low,) * 4 and d["g"] in ("-", "float32"), d


# What the model and the variants' loops call whose dtype under autocast is not the matmul's: CUDA autocast runs
# some in fp32, CPU autocast none of them.
AUTOCAST_PROBES = {
    "normalize": lambda y: F.normalize(y, dim=-1), "softmax": lambda y: y.softmax(-1),
    "log_softmax": lambda y: y.log_softmax(-1), "sum": lambda y: y.sum(-1), "sum all": lambda y: y.sum(),
    "mean": lambda y: y.mean(-1), "exp": torch.exp, "log": lambda y: y.abs().log(), "pow": lambda y: y.pow(2),
    "sqrt": lambda y: y.abs().sqrt(), "rsqrt": lambda y: y.abs().rsqrt(), "cumsum": lambda y: y.cumsum(-1),
    "layer_norm": lambda y: F.layer_norm(y, y.shape[-1:]), "rms_norm": lambda y: F.rms_norm(y, y.shape[-1:]),
    "softplus": F.softplus, "sigmoid": torch.sigmoid, "silu": F.silu, "logsumexp": lambda y: y.logsumexp(-1),
    "clamp_min": lambda y: y.clamp_min(1e-30), "cross_entropy": lambda y: F.cross_entropy(y, y.argmax(-1)),
    "matmul": lambda y: y @ y,
}  # fmt: skip


def autocast_dtypes(device: str) -> dict[str, torch.dtype]:
    """Each probe's output dtype for a bf16 input (a matmul's output) under bf16 autocast on ``device``."""
    x = torch.randn(8, 8, device=device)
    with torch.autocast(device, torch.bfloat16, cache_enabled=False):
        y = x @ x
        return {name: probe(y).dtype for name, probe in AUTOCAST_PROBES.items()}


def test_cpu_autocast_with_cudas_fp32_list_gives_cudas_dtypes(monkeypatch):
    """CUDA's autocast kernels are registered in a CPU build too: on fake CUDA tensors they give CUDA's dtypes
    (autocast refuses to start without a GPU, hence the two patches)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    monkeypatch.setattr(torch.cuda.amp.common, "amp_definitely_not_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    with FakeTensorMode():
        cuda = autocast_dtypes("cuda")
    with cuda_fp32_list():
        cpu = autocast_dtypes("cpu")
    assert cpu == cuda
    assert cuda["normalize"] == cuda["softmax"] == cuda["sum"] == torch.float32  # the ops of item 9, issue 28
    assert autocast_dtypes("cpu")["normalize"] == torch.bfloat16  # plain CPU autocast differs


@pytest.mark.parametrize("variant", variant_names())
def test_every_model_trains_a_step_under_bf16_autocast_at_full_shape(variant):
    cfg = ModelConfig(vocab_size=VOCAB, variant=variant, kernels="naive", **FULL_MODEL)
    seq_len = 2 * cfg.chunk_size + cfg.chunk_size // 2  # three chunks, the last one padded
    logits, grads, dtypes = training_step(cfg, torch.bfloat16, seq_len)
    assert logits.dtype == torch.bfloat16  # the model around the mixer really ran under autocast
    assert_mixer_inputs(dtypes, "bfloat16", "naive loop")
    assert torch.isfinite(logits.float()).all()
    missing = [n for n, g in grads.items() if g is None]
    bad = [n for n, g in grads.items() if g is not None and not torch.isfinite(g).all()]
    assert not missing and not bad, f"{variant}: no grad {missing}, non-finite grad {bad}"


@pytest.mark.parametrize("variant", ["delta_net_4layer", "gated_delta_net_4layer"])
def test_baselines_through_triton_kernels_under_autocast_match_the_naive_loop(variant):
    """Same model, same autocast (fp16: the interpreter's bf16 is broken): kernels vs the naive loop.

    Tolerance: the kernel check's fp16 tolerances (``deltanet/ops/testing.py``): the output's on the logits, the
    gradients' on every parameter gradient.
    """
    shape = dict(dim=64, num_heads=2, head_dim=32, chunk_size=16)
    naive = training_step(ModelConfig(vocab_size=VOCAB, variant=variant, kernels="naive", **shape), torch.float16, 40)
    fused = training_step(ModelConfig(vocab_size=VOCAB, variant=variant, kernels="triton", **shape), torch.float16, 40)
    assert fused[0].dtype == torch.float16
    assert_mixer_inputs(fused[2], "float16", "kernels")
    assert rms_ratio(naive[0].float(), fused[0].float()) < tolerance(torch.float16, "o", gated=False)
    for name, grad in naive[1].items():
        assert rms_ratio(grad, fused[1][name]) < tolerance(torch.float16, "dq", gated=False), name


def test_the_loops_softmax_and_row_norms_take_fp32_under_plain_cpu_autocast_too():
    """Under ``loop_precision: autocast`` the loop helpers see bf16 matmul outputs: they compute in fp32, as CUDA
    autocast would, so a CPU run of the loop matches a GPU's (exactly: same fp32 ops on the same bf16 values)."""
    from deltanet.variants._common import causal_softmax, l2_normalize, layer_norm, row_rms

    x = torch.randn(2, 8, 8, generator=torch.Generator().manual_seed(0)).bfloat16()
    allowed = torch.ones(8, 8, dtype=torch.bool).tril()
    helpers = {"causal_softmax": lambda t: causal_softmax(t, allowed), "l2_normalize": lambda t: l2_normalize(t, 1e-6),
               "layer_norm": lambda t: layer_norm(t, 1e-5), "row_rms": row_rms}  # fmt: skip
    for name, helper in helpers.items():
        with precision_context("cpu", torch.bfloat16):
            out = helper(x)
        assert out.dtype == torch.float32 and torch.equal(out, helper(x.float())), name


def test_ut_inverse_for_bf16_is_forward_substitution_and_matches_the_solve():
    a = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(0)).tril(-1) * 0.1
    exact = ut_transform(a)
    assert torch.allclose(forward_substitution(a), exact, atol=1e-5)
    assert ut_transform(a.bfloat16()).dtype == torch.bfloat16  # no solve_triangular kernel for bf16
    assert rms_ratio(exact, ut_transform(a.bfloat16()).float()) < 0.02


def test_loop_precision_fp32_ignores_autocast_and_autocast_follows_it():
    """fp32: the loop's result under bf16 autocast equals the loop without autocast (to fp32 rounding of the mixer
    inputs); autocast: the loop's matmuls run in bf16, so it differs, but stays within bf16 error."""
    inputs = make_inputs(2, 96, 4, 32, 32, gated=False)
    chunk = ModelConfig(vocab_size=VOCAB, **FULL_MODEL).chunk_size
    plain, _ = delta_rule_chunkwise(**inputs, chunk_size=chunk)
    with precision_context("cpu", torch.bfloat16):
        fp32, _ = delta_rule_chunkwise(**inputs, chunk_size=chunk, precision="fp32")
        mixed, _ = delta_rule_chunkwise(**inputs, chunk_size=chunk, precision="autocast")
    assert torch.equal(plain, fp32)
    assert 1e-4 < rms_ratio(plain, mixed) < 0.05


def test_train_job_on_the_gpu_precision_path(tmp_path):
    """``deltanet train`` with ``optim.precision: bf16`` on CPU: trains, checkpoints, is killed, resumes, restores
    the best epoch; rows are finite and the resumed job equals an uninterrupted one."""
    config = write_config(tmp_path, precision="bf16")
    whole = tmp_path / "whole.parquet"
    killed = tmp_path / "killed.parquet"
    with cuda_fp32_list():
        assert train(config, whole) == 0
        assert train(config, killed, hooks=stop_after(4)) == 3
        assert train(config, killed) == 0
    a, b = pd.read_parquet(whole), pd.read_parquet(killed)
    metrics = ["test_acc", "test_ppl", "test_loss", "train_acc", "train_loss", "best_epoch", "epochs_run"]
    assert a[metrics].notna().all().all() and (a["stop_reason"] != "diverged").all()
    pd.testing.assert_frame_equal(a[metrics], b[metrics])
