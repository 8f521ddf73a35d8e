"""Model: causality of the mixers and the language model, parameter counts, and that it trains."""

import pytest
import torch

from deltanet.model import AutoEncoder, DeltaNetMixer, LanguageModel, ModelConfig, ShortConv, count_parameters
from deltanet.ops.short_conv import short_conv_silu
from deltanet.variants import get_variant

SMALL = dict(vocab_size=16, dim=32, num_heads=2, head_dim=16, chunk_size=8)


@pytest.mark.parametrize("variant", ["delta_net_4layer", "gated_delta_net_4layer"])
def test_mixer_is_causal(variant):
    torch.manual_seed(0)
    mixer = DeltaNetMixer(ModelConfig(**SMALL, variant=variant), get_variant(variant))
    x = torch.randn(2, 21, 32)
    t = 9
    x2 = x.clone()
    x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :])
    y, y2 = mixer(x), mixer(x2)
    assert (y[:, : t + 1] - y2[:, : t + 1]).abs().max() <= 1e-6
    assert (y[:, t + 1 :] - y2[:, t + 1 :]).abs().max() > 1e-3  # the perturbation is visible after t


@pytest.mark.parametrize("variant", ["delta_net_4layer", "gated_delta_net_4layer"])
def test_language_model_is_causal(variant):
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(**SMALL, variant=variant))
    tokens = torch.randint(0, 16, (2, 30))
    for t in (0, 7, 8, 20):
        perturbed = tokens.clone()
        perturbed[:, t + 1 :] = (perturbed[:, t + 1 :] + 5) % 16
        assert (model(tokens)[:, : t + 1] - model(perturbed)[:, : t + 1]).abs().max() <= 1e-6


@pytest.mark.parametrize("kernel_size", [1, 4])
def test_short_conv_is_the_causal_depthwise_convolution(kernel_size):
    """The shifted multiply-adds equal ``F.conv1d`` with groups = D and K − 1 left padding, in value and gradient
    (fp32, 1e-6), with ``nn.Conv1d``'s init; under bf16 autocast (CPU here, CUDA in the jobs) a bf16 input gives the
    fp32 result rounded once to bf16, as fla's kernel does (not a sum rounded term by term)."""
    torch.manual_seed(0)
    conv = ShortConv(8, kernel_size)
    torch.manual_seed(0)
    reference = torch.nn.Conv1d(8, 8, kernel_size, groups=8, bias=False, padding=kernel_size - 1)
    assert torch.equal(conv.weight, reference.weight.view(8, kernel_size))
    x = torch.randn(3, 11, 8, requires_grad=True)
    expected = torch.nn.functional.silu(reference(x.transpose(1, 2))[..., :11].transpose(1, 2))
    grad_out = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, (x, reference.weight), grad_out)
    y = conv(x)
    grads = torch.autograd.grad(y, (x, conv.weight), grad_out)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(grads[0], expected_grads[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(grads[1], expected_grads[1].view(8, kernel_size), rtol=0, atol=1e-5)
    x16 = x.detach().bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = conv(x16)
    assert y16.dtype == torch.bfloat16
    assert torch.equal(y16, conv(x16.float()).bfloat16())


def test_short_conv_keeps_only_its_bf16_input_for_the_backward_and_runs_under_vmap():
    """Under bf16 autocast the backward keeps x (bf16) and the weight, nothing in fp32: autograd through the fp32
    shifted sum kept x, the padded x and the pre-activation in fp32 (12 bytes an element against 2). Under ``vmap``
    (a fused group) each member's output and gradients equal its own run's."""
    torch.manual_seed(0)
    conv = ShortConv(8, 4)
    x = torch.randn(3, 11, 8).bfloat16().requires_grad_()
    saved = {}

    def keep(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autocast("cpu", dtype=torch.bfloat16), torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        conv(x)
    assert sum(saved.values()) == x.nbytes + conv.weight.nbytes

    weights = torch.randn(2, 8, 4, requires_grad=True)
    xs = torch.randn(2, 3, 11, 8, requires_grad=True)
    fused = torch.func.vmap(short_conv_silu)(xs, weights)
    grad_out = torch.randn_like(fused)
    fused_grads = torch.autograd.grad(fused, (xs, weights), grad_out)
    for i in range(2):
        solo = short_conv_silu(xs[i], weights[i])
        solo_grads = torch.autograd.grad(solo, (xs, weights), grad_out[i])
        torch.testing.assert_close(fused[i], solo, rtol=0, atol=0)
        torch.testing.assert_close(fused_grads[0][i], solo_grads[0][i], rtol=0, atol=1e-7)
        torch.testing.assert_close(fused_grads[1][i], solo_grads[1][i], rtol=0, atol=1e-6)


def test_default_width_parameter_counts_are_near_iso():
    delta = count_parameters(LanguageModel(ModelConfig(vocab_size=16)))
    gated = count_parameters(LanguageModel(ModelConfig(vocab_size=16, variant="gated_delta_net_4layer")))
    assert 300_000 < delta < gated < 1.1 * delta


def test_autoencoder_decodes_every_position():
    model = AutoEncoder(ModelConfig(**SMALL, max_length=12))
    assert model(torch.randint(0, 16, (3, 12))).shape == (3, 12, 16)


@pytest.mark.parametrize("variant", ["delta_net_4layer", "gated_delta_net_4layer"])
def test_model_trains(variant):
    """50 AdamW steps on one fixed batch of a learnable sequence cut the loss at least 4×."""
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(**SMALL, variant=variant))
    tokens = torch.randint(0, 16, (16, 24))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(50):
        loss = torch.nn.functional.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 4, f"loss {losses[0]:.3f} -> {losses[-1]:.3f}"


def test_bad_model_config_names_the_field():
    with pytest.raises(ValueError, match="ModelConfig.dim"):
        ModelConfig(vocab_size=16, dim=0)
    with pytest.raises(ValueError, match="ModelConfig.layers"):
        ModelConfig(vocab_size=16, layers=("mixer", "attention"))
