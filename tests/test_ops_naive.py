"""Naive ops: chunkwise == recurrence (values and gradients), hand-computed steps, UT transform, bad input."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from deltanet.ops import (
    delta_rule_chunkwise,
    delta_rule_recurrence,
    gated_delta_rule_chunkwise,
    gated_delta_rule_recurrence,
    testing,
)
from deltanet.ops.chunkwise import ut_transform
from deltanet.ops.testing import assert_close, forward_backward

TOL = 1e-5  # relative RMS error, fp32


def make_inputs(B, T, H, D, gated, h0=False):
    return testing.make_inputs(B, T, H, D, D, gated=gated, h0=h0)


def run_both(gated, inputs, chunk_size):
    rec, chunk = (gated_delta_rule_recurrence, gated_delta_rule_chunkwise) if gated else (
        delta_rule_recurrence, delta_rule_chunkwise)
    return forward_backward(rec, inputs), forward_backward(chunk, inputs, chunk_size=chunk_size)


@pytest.mark.parametrize("gated", [False, True], ids=["delta", "gated"])
@pytest.mark.parametrize("T,chunk_size", [(64, 16), (50, 16), (37, 8), (64, 32), (5, 32)])
@pytest.mark.parametrize("h0", [False, True], ids=["no_h0", "h0"])
def test_chunkwise_matches_recurrence(gated, T, chunk_size, h0):
    ref, out = run_both(gated, make_inputs(2, T, 3, 16, gated, h0=h0), chunk_size)
    for name in ref:
        assert_close(name, ref[name], out[name], TOL)


class ElementsWritten(TorchDispatchMode):
    """Sums the elements every non-view aten op writes (its outputs) while active: the work of a pass, counted."""

    def __init__(self):
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            self.elements += sum(x.numel() for x in tree_leaves(out) if isinstance(x, torch.Tensor))
        return out


@pytest.mark.parametrize("gated", [False, True], ids=["delta", "gated"])
def test_chunk_loop_work_grows_linearly_with_the_chunks(gated):
    """Forward + backward of the chunkwise op write O(N) elements in the number of chunks N: 16 → 32 chunks at most
    2.1× (measured 2.01). Taking chunk i by indexing made the backward fill a full-size zero gradient per chunk and
    input (N², measured 3.25× and 3.10×)."""
    op = gated_delta_rule_chunkwise if gated else delta_rule_chunkwise

    def written(num_chunks):
        with ElementsWritten() as counter:
            forward_backward(op, make_inputs(1, 4 * num_chunks, 2, 4, gated), chunk_size=4)
        return counter.elements

    assert written(32) / written(16) <= 2.1


def test_delta_rule_two_steps_by_hand():
    # H=1, Dk=Dv=2, scale 1. Step 1: S1 = k1ᵀ β1 v1. Step 2: S2 = S1 + k2ᵀ β2 (v2 − k2 S1); o_t = q_t S_t.
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    k = torch.tensor([[1.0, 0.0], [0.6, 0.8]]).view(1, 2, 1, 2)
    v = torch.tensor([[2.0, 4.0], [1.0, 1.0]]).view(1, 2, 1, 2)
    beta = torch.tensor([0.5, 0.25]).view(1, 2, 1)
    S1 = torch.tensor([[1.0, 2.0], [0.0, 0.0]])  # k1ᵀ (0.5 · [2, 4])
    err2 = 0.25 * (torch.tensor([1.0, 1.0]) - torch.tensor([0.6, 1.2]))  # k2 S1 = [0.6, 1.2]
    S2 = S1 + torch.outer(torch.tensor([0.6, 0.8]), err2)
    expected_o = torch.stack([S1[0], S2[1]])  # q1 = e1 reads row 0 of S1, q2 = e2 reads row 1 of S2
    for fn in (delta_rule_recurrence, lambda *a, **kw: delta_rule_chunkwise(*a, chunk_size=2, **kw)):
        o, S = fn(q, k, v, beta, scale=1.0)
        torch.testing.assert_close(o.view(2, 2), expected_o)
        torch.testing.assert_close(S.view(2, 2), S2)


def test_gated_delta_rule_two_steps_by_hand():
    # S1 = e^{g1}·0 + k1ᵀ β1 v1;  S2 = e^{g2} S1 + k2ᵀ β2 (v2 − k2 e^{g2} S1).
    q = torch.tensor([[1.0, 0.0], [1.0, 1.0]]).view(1, 2, 1, 2)
    k = torch.tensor([[0.0, 1.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    v = torch.tensor([[3.0, 1.0], [1.0, 2.0]]).view(1, 2, 1, 2)
    beta = torch.tensor([1.0, 0.5]).view(1, 2, 1)
    g = torch.log(torch.tensor([0.9, 0.5])).view(1, 2, 1)
    S1 = torch.tensor([[0.0, 0.0], [3.0, 1.0]])
    decayed = 0.5 * S1
    S2 = decayed + torch.outer(torch.tensor([0.0, 1.0]), 0.5 * (torch.tensor([1.0, 2.0]) - decayed[1]))
    expected_o = torch.stack([torch.tensor([0.0, 0.0]), S2[0] + S2[1]])
    for fn in (gated_delta_rule_recurrence, lambda *a, **kw: gated_delta_rule_chunkwise(*a, chunk_size=2, **kw)):
        o, S = fn(q, k, v, g, beta, scale=1.0)
        torch.testing.assert_close(o.view(2, 2), expected_o)
        torch.testing.assert_close(S.view(2, 2), S2)


def forward_substitution(a_strict):
    """The sweep of docs/deltanet-math.md §1.2: A = −A_strict; A[i,:i] += Σ_m A[i,m] A[m,:i]; T = A + I."""
    A = -a_strict.clone()
    for i in range(1, A.shape[-1]):
        A[..., i, :i] = A[..., i, :i] + (A[..., i, :, None] * A[..., :, :i]).sum(-2)
    return A + torch.eye(A.shape[-1])


def test_ut_transform_equals_forward_substitution():
    gen = torch.Generator().manual_seed(0)
    k = F.normalize(torch.randn(3, 16, 8, generator=gen), dim=-1)
    beta = torch.rand(3, 16, generator=gen)
    a = ((k * beta[..., None]) @ k.transpose(-1, -2)).tril(-1)
    assert_close("T", forward_substitution(a), ut_transform(a), 1e-6)


def test_outputs_keep_input_dtype_and_state_is_fp32():
    x = make_inputs(1, 20, 2, 8, gated=False)
    o, S = delta_rule_chunkwise(*(x[n].half() for n in ("q", "k", "v", "beta")), chunk_size=8)
    assert o.dtype == torch.float16 and S.dtype == torch.float32


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda x: x.update(q=x["q"][0]), "q must have shape"),
        (lambda x: x.update(k=x["k"][:, :, :1]), "k must have the shape of q"),
        (lambda x: x.update(v=x["v"][:, :-1]), "v must have shape"),
        (lambda x: x.update(beta=x["beta"][..., None]), "beta must have shape"),
        (lambda x: x.update(initial_state=torch.zeros(1, 2, 8, 4)), "initial_state must have shape"),
    ],
)
def test_bad_shapes_raise_value_error_naming_the_argument(change, message):
    x = make_inputs(1, 10, 2, 8, gated=False)
    change(x)
    for fn in (delta_rule_recurrence, delta_rule_chunkwise):
        with pytest.raises(ValueError, match=message):
            fn(**x)


def test_bad_gate_shape_raises():
    x = make_inputs(1, 10, 2, 8, gated=True)
    x["g"] = x["g"][:, :5]
    with pytest.raises(ValueError, match="g must have shape"):
        gated_delta_rule_chunkwise(**x)
