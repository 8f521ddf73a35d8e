"""Every registered variant (parametrised over ``variant_names()``, so a new file is tested at once).

Generic checks: shapes/dtypes and finiteness (fp32, bf16; CPU, and CUDA when present); finite grads for every model
parameter; causality at a mid-chunk position (and that the check catches a leaky loop); chunk-size consistency, or
real chunk dependence where a variant declares it. Specific checks: the baselines and the per-token variants equal
their token recurrences; the registry; ``deltanet variants`` and ``deltanet new-variant``.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from deltanet.model import LanguageModel, ModelConfig, count_parameters
from deltanet.ops import (
    delta_rule_chunkwise,
    delta_rule_recurrence,
    gated_delta_rule_chunkwise,
    gated_delta_rule_recurrence,
)
from deltanet.variants import Variant, all_variants, get_variant, variant_names
from deltanet.variants.catalog import BASELINE_VARIANTS
from deltanet.cli import variants as variants_cli

B, H, DK, DV = 2, 2, 16, 16  # DV > topk_error_update.TOPK, so its top-k really selects
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

VARIANTS_24 = {"delta_net_4layer", "gated_delta_net_4layer"} | {
    f"delta_net_4layer_{x}_in_for_loop"
    for x in (
        "adam_state_update", "adaptive_gated_softmax_attention", "add_local_softmax_self_attention",
        "cosine_softmax_attention_error_gated_update", "cosine_softmax_attention", "decay_state_update",
        "error_gated_state_update", "gelu_on_prediction_error", "hybrid_softmax_raw_attention",
        "layernorm_qk_before_attention", "layernorm_state_update", "momentum_state_update", "normalize_keys",
        "rmsprop_state_update", "rope_qk", "sigmoid_error_forget_gate_state_update", "sigmoid_similarity_gate",
        "softmax_attention", "topk_error_update", "topk_softmax_attention",
        "l2_normalized_error_state_update", "add_layernorm_to_error",
    )
}  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# helpers


def make_inputs(T: int, mixer: str, seed: int = 0, dtype=torch.float32, device="cpu") -> dict:
    """Mixer-like inputs [B, T, H, D]: unit q/k, β ∈ (0, 1), gated: small negative log-decays."""
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    x = dict(
        q=F.normalize(rand(B, T, H, DK), dim=-1),
        k=F.normalize(rand(B, T, H, DK), dim=-1),
        v=rand(B, T, H, DV),
        beta=torch.sigmoid(rand(B, T, H)),
    )
    if mixer == "gated":
        x["g"] = F.logsigmoid(rand(B, T, H) + 3.0)
    return {name: t.to(device=device, dtype=dtype) for name, t in x.items()}


def make_loop_params(variant: Variant, device="cpu"):
    """The variant's parameters, nudged off their init (zero inits could hide a dependence)."""
    if variant.make_params is None:
        return None
    torch.manual_seed(1)
    params = variant.make_params(H, DK, DV)
    with torch.no_grad():
        for p in params.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return params.to(device)


def run(variant: Variant, inputs: dict, chunk_size: int, params=None, loop_body=None):
    op = delta_rule_chunkwise if variant.mixer == "delta" else gated_delta_rule_chunkwise
    return op(
        **inputs,
        chunk_size=chunk_size,
        loop_body=loop_body or variant.loop_body,
        params=params,
        init_carry=variant.init_carry,
    )


def causal_violation(variant: Variant, t: int, loop_body=None, T: int = 24, chunk_size: int = 8):
    """(max |Δ out| at positions ≤ t, max |Δ out| after t) when every input at positions > t is re-drawn."""
    inputs, other = make_inputs(T, variant.mixer, seed=0), make_inputs(T, variant.mixer, seed=5)
    perturbed = {name: torch.cat([x[:, : t + 1], other[name][:, t + 1 :]], dim=1) for name, x in inputs.items()}
    params = make_loop_params(variant)
    o, _ = run(variant, inputs, chunk_size, params, loop_body)
    o2, _ = run(variant, perturbed, chunk_size, params, loop_body)
    diff = (o - o2).abs()
    return diff[:, : t + 1].max().item(), diff[:, t + 1 :].max().item()


def check_shapes_and_finite(variant: Variant, dtype=torch.float32, device="cpu") -> None:
    T = 21  # not a multiple of the chunk size: the last chunk is padded
    inputs = make_inputs(T, variant.mixer, dtype=dtype, device=device)
    o, S = run(variant, inputs, chunk_size=8, params=make_loop_params(variant, device))
    assert o.shape == (B, T, H, DV) and o.dtype == dtype and o.device.type == device
    assert S.shape == (B, H, DK, DV) and S.dtype == torch.float32
    assert torch.isfinite(o).all() and torch.isfinite(S).all()


def check_causal(variant: Variant) -> None:
    for t in (3, 11):  # both mid-chunk at chunk size 8 (11 = row 3 of the second chunk)
        before, after = causal_violation(variant, t)
        assert before <= 1e-6, f"outputs at positions <= {t} change when later inputs change (by {before:.2e})"
        assert after > 1e-4  # the perturbation is visible after t: the check is not vacuous


def chunk_size_outputs(variant: Variant):
    inputs, params = make_inputs(80, variant.mixer), make_loop_params(variant)  # 80: padded at 32 and 64
    return [run(variant, inputs, c, params) for c in (16, 32, 64)]


def check_chunk_sizes(variant: Variant) -> None:
    (o16, s16), *rest = chunk_size_outputs(variant)
    if not variant.chunk_dependent:
        for o, s in rest:
            torch.testing.assert_close(o, o16, atol=1e-5, rtol=0)
            torch.testing.assert_close(s, s16, atol=1e-5, rtol=0)
    else:  # the declaration must be honest: the chunk size really changes the outputs
        assert max((o - o16).abs().max().item() for o, _ in rest) > 1e-4, "declared CHUNK_DEPENDENT but is not"


# --------------------------------------------------------------------------------------------------------------
# the registry


def test_registry_finds_exactly_the_24_variants():
    assert set(variant_names()) == VARIANTS_24
    assert len(all_variants()) == 24


def test_unknown_variant_names_the_closest_match():
    with pytest.raises(ValueError, match="delta_net_4layer_softmax_attention_in_for_loop") as err:
        get_variant("delta_net_4layer_softmax_attention")
    assert str(err.value) == ("unknown variant 'delta_net_4layer_softmax_attention'; did you mean "
                              "'delta_net_4layer_softmax_attention_in_for_loop'? (deltanet variants lists all 24)")


@pytest.mark.parametrize("name", variant_names())
def test_module_contract_and_docstring(name):
    variant = get_variant(name)
    module = sys.modules[f"deltanet.variants.{name}"]
    assert variant.summary and len(variant.summary) <= 160
    assert len(module.__doc__.strip().splitlines()) >= 4, "docstring: summary, change, math, interpretation"
    if variant.uses_kernel:  # the fused kernel runs the baseline loop on the raw inputs
        assert name in ("delta_net_4layer", "gated_delta_net_4layer")


# --------------------------------------------------------------------------------------------------------------
# generic checks, every variant


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", variant_names())
def test_shapes_dtypes_and_finite(name, dtype, device):
    check_shapes_and_finite(get_variant(name), dtype, device)


@pytest.mark.parametrize("name", variant_names())
def test_finite_grads_for_every_parameter(name):
    """Through a small LanguageModel: every parameter (loop parameters included) gets a finite gradient."""
    torch.manual_seed(0)
    cfg = dict(vocab_size=16, dim=16, num_heads=H, head_dim=DK, chunk_size=8)
    model = LanguageModel(ModelConfig(**cfg, variant=name))
    tokens = torch.randint(0, 16, (2, 21))
    F.cross_entropy(model(tokens).flatten(0, 1), torch.randint(0, 16, (42,))).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
    # the loop parameters live in the mixers and are counted (2 mixers per model)
    variant = get_variant(name)
    extra = count_parameters(variant.make_params(H, DK, DK)) if variant.make_params else 0
    base = "delta_net_4layer" if variant.mixer == "delta" else "gated_delta_net_4layer"
    assert count_parameters(model) == count_parameters(LanguageModel(ModelConfig(**cfg, variant=base))) + 2 * extra


@pytest.mark.parametrize("name", variant_names())
def test_causal(name):
    check_causal(get_variant(name))


def test_causality_check_catches_a_leaky_loop():
    """A loop that forgets the causal mask in its intra-chunk attention (or softmax) is caught."""
    from deltanet.variants._common import corrected_values, read, scores, write

    def leaky_linear(chunk, carry, params):
        S = carry["S"]
        u = corrected_values(chunk, S)
        return read(chunk, S, scores(chunk), u), {**carry, "S": write(chunk, S, u)}

    def leaky_softmax(chunk, carry, params):
        S = carry["S"]
        u = corrected_values(chunk, S)
        return read(chunk, S, scores(chunk).softmax(-1), u), {**carry, "S": write(chunk, S, u)}

    for body in (leaky_linear, leaky_softmax):
        before, _ = causal_violation(get_variant("delta_net_4layer"), t=11, loop_body=body)
        assert before > 1e-3
        with pytest.raises(AssertionError, match="later inputs"):
            check_causal(dataclasses.replace(get_variant("delta_net_4layer"), loop_body=body))


@pytest.mark.parametrize("name", variant_names())
def test_padding_rows_do_not_change_real_rows(name):
    """T = 21 (3 padding rows at chunk size 8) gives the first 21 outputs of the same data at T = 24."""
    variant, params = get_variant(name), None
    x = make_inputs(24, variant.mixer)
    params = make_loop_params(variant)
    o_full, _ = run(variant, x, 8, params)
    o_pad, _ = run(variant, {n: t[:, :21] for n, t in x.items()}, 8, params)
    torch.testing.assert_close(o_pad, o_full[:, :21], atol=1e-6, rtol=0)


def test_causal_softmax_and_topk_never_see_masked_entries():
    from deltanet.variants._common import causal_softmax, topk_mask

    logits = torch.randn(4, 4, requires_grad=True)
    allowed = torch.ones(4, 4, dtype=torch.bool).tril(-1)  # row 0 has no allowed entry
    p = causal_softmax(logits, allowed)
    assert torch.isfinite(p).all() and (p[0] == 0).all() and (p[~allowed] == 0).all()
    torch.testing.assert_close(p[1:].sum(-1), torch.ones(3))
    p.pow(2).sum().backward()
    assert torch.isfinite(logits.grad).all()
    keep = topk_mask(logits.detach(), 2, allowed)
    assert not keep[~allowed].any() and keep.sum(-1).tolist() == [0, 1, 2, 2]


@pytest.mark.parametrize("name", variant_names())
def test_chunk_size_consistency_or_declared_dependence(name):
    check_chunk_sizes(get_variant(name))


# --------------------------------------------------------------------------------------------------------------
# exact references


@pytest.mark.parametrize("chunk_size", [4, 16])
def test_baselines_equal_their_token_recurrences(chunk_size):
    x = make_inputs(21, "gated")
    o, S = run(get_variant("delta_net_4layer"), {n: x[n] for n in ("q", "k", "v", "beta")}, chunk_size)
    o_ref, S_ref = delta_rule_recurrence(x["q"], x["k"], x["v"], x["beta"])
    torch.testing.assert_close(o, o_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(S, S_ref, atol=1e-5, rtol=0)
    o, S = run(get_variant("gated_delta_net_4layer"), x, chunk_size)
    o_ref, S_ref = gated_delta_rule_recurrence(x["q"], x["k"], x["v"], x["g"], x["beta"])
    torch.testing.assert_close(o, o_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(S, S_ref, atol=1e-5, rtol=0)


def test_per_token_variants_equal_their_token_recurrences():
    """decay = gated recurrence with g = log λ; normalize_keys / rope_qk = delta recurrence on transformed q, k."""
    x = make_inputs(21, "delta")
    q, k, v, beta = x["q"], 3.0 * x["k"], x["v"], x["beta"]  # keys deliberately not unit-norm

    def check(name, reference):
        o, S = run(get_variant(name), dict(q=q, k=k if "normalize" in name else x["k"], v=v, beta=beta), 8)
        torch.testing.assert_close(o, reference[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(S, reference[1], atol=1e-5, rtol=0)

    decay = sys.modules["deltanet.variants.delta_net_4layer_decay_state_update_in_for_loop"]
    g = torch.full_like(beta, torch.tensor(decay.DECAY).log().item())
    check(decay.__name__.rsplit(".", 1)[1], gated_delta_rule_recurrence(q, x["k"], v, g, beta))
    check("delta_net_4layer_normalize_keys_in_for_loop", delta_rule_recurrence(q, F.normalize(k, dim=-1), v, beta))
    rope = sys.modules["deltanet.variants.delta_net_4layer_rope_qk_in_for_loop"]
    pos = torch.arange(21)
    rot = lambda t: rope.rotate(t.movedim(1, 2), pos).movedim(2, 1)  # noqa: E731  [B,T,H,D] -> rotate over T
    check("delta_net_4layer_rope_qk_in_for_loop", delta_rule_recurrence(rot(q), rot(x["k"]), v, beta))


# --------------------------------------------------------------------------------------------------------------
# command line


def test_variants_command_prints_one_line_per_variant(capsys):
    assert variants_cli.list_main([]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    body = lines[2:]  # header + rule
    assert len(body) == 24
    delta = count_parameters(LanguageModel(ModelConfig(vocab_size=16)))
    for line, name in zip(body, variant_names()):
        fields = line.split(maxsplit=3)
        assert fields[0] == name and fields[1] == get_variant(name).mixer
        assert fields[3] == get_variant(name).summary
    assert f"{delta:,}" in body[0]


@pytest.mark.parametrize("mixer", ["delta", "gated"])
def test_new_variant_command_creates_a_variant_that_passes_the_suite(mixer, capsys):
    name = f"zz_test_new_{mixer}_variant"
    path = variants_cli.PACKAGE_DIR / f"{name}.py"
    assert not path.exists()
    try:
        assert variants_cli.new_main([name, "--mixer", mixer, "--summary", "A test variant."]) == 0
        assert name in variant_names()
        variant = get_variant(name)
        assert variant.mixer == mixer and variant.summary == "A test variant."
        check_shapes_and_finite(variant)
        check_shapes_and_finite(variant, torch.bfloat16)
        check_causal(variant)
        check_chunk_sizes(variant)
        # it starts as the baseline loop, so it equals the baseline
        x = make_inputs(21, mixer)
        base = get_variant("delta_net_4layer" if mixer == "delta" else "gated_delta_net_4layer")
        torch.testing.assert_close(run(variant, x, 8)[0], run(base, x, 8)[0], atol=1e-6, rtol=0)
        assert variants_cli.new_main([name]) == 2  # exists
        assert "already exists" in capsys.readouterr().err
    finally:
        path.unlink(missing_ok=True)
        get_variant.cache_clear()
        sys.modules.pop(f"deltanet.variants.{name}", None)
    assert name not in variant_names()


@pytest.mark.parametrize("mixer", ["delta", "gated"])
def test_the_new_variant_loop_is_the_baseline_loop_body_itself(mixer):
    """The template takes the baseline's own statements (read from its source), not a text copy kept beside them."""
    written = ast.parse(variants_cli.render_template("zz_test_template", mixer))
    [loop] = [node for node in written.body if isinstance(node, ast.FunctionDef) and node.name == "loop_body"]
    [source] = ast.parse(textwrap.dedent(inspect.getsource(get_variant(BASELINE_VARIANTS[mixer]).loop_body))).body
    statements = source.body[1:] if ast.get_docstring(source) else source.body
    assert [ast.dump(node) for node in loop.body] == [ast.dump(node) for node in statements]
    assert [arg.arg for arg in loop.args.args] == [arg.arg for arg in source.args.args]


@pytest.mark.parametrize("bad", ["Bad-Name", "1abc", "class", "catalog", "delta_net_4layer"])
def test_new_variant_rejects_bad_or_existing_names(bad, capsys):
    assert variants_cli.new_main([bad]) == 2
    assert "new-variant" in capsys.readouterr().err
