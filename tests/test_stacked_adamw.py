"""StackedAdamW: each member's trajectory against torch.optim.AdamW on that member alone, checkpoint round trip,
dropping members, and no host sync in ``step()``.

Every comparison is bitwise (rtol=0, atol=0): the optimiser runs torch's non-capturable AdamW ops in torch's order
with the per-member scalars computed in float64 as torch computes them in Python floats (see the module docstring),
so on CPU with fp32 parameters nothing is left to round differently.
"""

import io

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode
from torch.testing import assert_close

from deltanet.training.optim import StackedAdamW

LRS = [1e-3, 5e-4, 1e-4]
WDS = [0.0, 0.1, 0.1]
LRS_LATER = [2e-3, 1e-4, 3e-4]  # set in place mid-run
R = len(LRS)
FROZEN = "norm.weight"  # never gets a grad: skipped by both optimisers


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.lin = nn.Linear(6, 5)
        self.norm = nn.RMSNorm(5)


def members() -> list[Small]:
    models = []
    for r in range(R):
        torch.manual_seed(100 + r)  # independently initialised
        models.append(Small())
    return models


def stacked(models: list[Small]) -> dict[str, torch.Tensor]:
    params, _ = torch.func.stack_module_state(models)
    return params


def grads(params: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
    """Per-member gradients [R, ...] for ``step``, spread over a few orders of magnitude."""
    gen = torch.Generator().manual_seed(step)
    out = {}
    for name, p in params.items():
        if name != FROZEN:
            g = torch.randn(p.shape, generator=gen)
            out[name] = g * torch.logspace(-3, 1, g.numel()).reshape(g.shape)
    return out


def set_grads(params: dict[str, torch.Tensor], step: int) -> None:
    for name, g in grads(params, step).items():
        params[name].grad = g


def new_opt(params: dict[str, torch.Tensor], lrs=LRS) -> StackedAdamW:
    return StackedAdamW(list(params.values()), lr=torch.tensor(lrs, dtype=torch.float64), weight_decay=WDS)


def run(params: dict[str, torch.Tensor], opt: StackedAdamW, steps: range) -> None:
    for i in steps:
        if i == 10:
            opt.lr.copy_(torch.tensor(LRS_LATER, dtype=torch.float64))
        set_grads(params, i)
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize("foreach", [True, False])
def test_each_member_matches_torch_adamw(foreach):
    models = members()
    params = stacked(models)
    opt = new_opt(params)
    refs = [torch.optim.AdamW(m.parameters(), lr=LRS[r], weight_decay=WDS[r], foreach=foreach)
            for r, m in enumerate(models)]  # fmt: skip
    for i in range(20):
        if i == 10:
            opt.lr.copy_(torch.tensor(LRS_LATER, dtype=torch.float64))
            for ref, lr in zip(refs, LRS_LATER):
                ref.param_groups[0]["lr"] = lr
        g = grads(params, i)
        for name, p in params.items():
            p.grad = g.get(name)
        for r, m in enumerate(models):
            for name, p in m.named_parameters():
                p.grad = g[name][r].clone() if name in g else None
        opt.step()
        for ref in refs:
            ref.step()
    for r, m in enumerate(models):
        for name, p in m.named_parameters():
            assert_close(params[name][r], p, rtol=0, atol=0, msg=lambda s: f"member {r} {name}: {s}")
    assert torch.equal(params[FROZEN], torch.ones(R, 5))
    assert opt.steps.tolist() == [20.0] * R


def test_state_dict_round_trip_is_bitwise():
    params = stacked(members())
    opt = new_opt(params)
    run(params, opt, range(8))
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    saved = {name: p.detach().clone().requires_grad_() for name, p in params.items()}
    run(params, opt, range(8, 13))  # crosses the in-place lr change at step 10

    buf.seek(0)
    resumed = new_opt(saved, lrs=[0.0] * R)  # the lr comes back from the state dict
    resumed.load_state_dict(torch.load(buf))
    run(saved, resumed, range(8, 13))
    for name in params:
        assert_close(saved[name], params[name], rtol=0, atol=0)
    assert_close(resumed.state_dict(), opt.state_dict(), rtol=0, atol=0)


@pytest.mark.parametrize("keep", [[0, 2], torch.tensor([True, False, True])], ids=["indices", "mask"])
def test_select_leaves_the_kept_members_unchanged(keep):
    full = stacked(members())
    full_opt = new_opt(full)
    run(full, full_opt, range(16))

    params = stacked(members())
    opt = new_opt(params)
    run(params, opt, range(6))
    params = {name: p.detach()[keep].clone().requires_grad_() for name, p in params.items()}
    opt.select(keep, list(params.values()))
    assert opt.lr.tolist() == [LRS[0], LRS[2]]
    for i in range(6, 16):
        if i == 10:
            opt.lr.copy_(torch.tensor(LRS_LATER, dtype=torch.float64)[keep])
        for name, g in grads(full, i).items():
            params[name].grad = g[keep]
        opt.step()
        opt.zero_grad()
    for name in full:
        assert_close(params[name], full[name].detach()[keep], rtol=0, atol=0)


def test_select_rejects_params_not_sliced_like_keep():
    params = stacked(members())
    opt = new_opt(params)
    with pytest.raises(ValueError, match="members"):
        opt.select([0, 2], list(params.values()))


def fake_step(opt_class: type[StackedAdamW]) -> None:
    with FakeTensorMode():
        params = [torch.randn(R, 4, 3, requires_grad=True), torch.randn(R, 5, requires_grad=True)]
        for p in params:
            p.grad = torch.randn_like(p)
        opt = opt_class(params, lr=torch.full((R,), 1e-3), weight_decay=torch.full((R,), 0.1))
        opt.step()
        opt.lr.copy_(torch.full((R,), 5e-4))
        opt.step()
        opt.zero_grad(set_to_none=False)


def test_step_reads_no_tensor_on_the_host():
    fake_step(StackedAdamW)  # a fake tensor has no data: any .item(), float(t) or `if t:` in step() would raise


def test_fake_tensor_mode_catches_a_host_read():
    class Syncing(StackedAdamW):
        def step(self) -> None:
            if self.steps[0].item() < 1e9:
                super().step()

    with pytest.raises(DataDependentOutputException):
        fake_step(Syncing)
