"""Fused runs: the R runs of one setting trained as one model whose parameters carry a leading member dimension.

Each member is built exactly as its solo run would be (its seed, then the model build); ``torch.func``'s
``stack_module_state`` stacks the R models into tensors ``[R, ...]`` and ``vmap`` over ``functional_call`` runs all
members in one pass, so every op launches once for the group (the Triton kernels fold the members into their batch:
``deltanet/ops/kernels/function.py``). Members never mix: member i reads only its own parameters and batch, and the
group's loss is Σ_i loss_i, whose gradient with respect to member i's parameters is member i's own gradient.
``randomness="error"``: the models draw no random numbers while training, so nothing couples the members' streams.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from deltanet.tasks.generator_kit import IGNORE


class FusedModel:
    """R members of one architecture: ``logits(x [R, B, T]) -> [R, B, T', V]``; ``select`` keeps some members."""

    def __init__(self, base: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor]):
        self.base, self.params, self.buffers = base, params, buffers

    @classmethod
    def stack(cls, models: list[nn.Module]) -> "FusedModel":
        params, buffers = stack_module_state(models)  # new leaf tensors [R, ...]: the ones to optimise
        return cls(copy.deepcopy(models[0]).to("meta"), params, buffers)

    @classmethod
    def from_member_states(cls, like: "FusedModel", states: list[dict[str, Tensor]]) -> "FusedModel":
        """A group of the members whose parameters are ``states`` (from :meth:`member_state`), without gradients."""
        stacked = {name: torch.stack([s[name] for s in states]) for name in states[0]}
        return cls(like.base, {n: stacked[n] for n in like.params}, {n: stacked[n] for n in like.buffers})

    @property
    def size(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def parameters(self) -> list[Tensor]:
        return list(self.params.values())

    def num_parameters(self) -> int:
        """Parameters of one member."""
        return sum(p[0].numel() for p in self.params.values())

    def _member_logits(self, params: dict, buffers: dict, x: Tensor) -> Tensor:
        return functional_call(self.base, (params, buffers), (x,))

    def logits(self, x: Tensor, shared: bool = False) -> Tensor:
        """Every member's logits: ``x`` is ``[R, B, T]`` (a batch per member) or, ``shared``, one ``[B, T]`` batch.

        A group of one runs its member directly (same ops, no batching layer: vmap costs ~40 % of a tiny CPU step),
        its tensors taken with ``squeeze(0)``, a view both ways (``t[0]``'s backward fills a zero gradient and copies
        into it: two kernels per parameter and step)."""
        if self.size == 1:
            one = {n: t.squeeze(0) for n, t in self.params.items()}, {n: t.squeeze(0) for n, t in self.buffers.items()}
            return self._member_logits(*one, x if shared else x.squeeze(0)).unsqueeze(0)
        return vmap(self._member_logits, in_dims=(0, 0, None if shared else 0), randomness="error")(
            self.params, self.buffers, x
        )

    def member_state(self, i: int) -> dict[str, Tensor]:
        """Member i's parameters and buffers, detached copies (its solo model's ``state_dict`` by name)."""
        return {name: t[i].detach().clone() for name, t in {**self.params, **self.buffers}.items()}

    def select(self, keep: list[int]) -> None:
        """Keep only the members ``keep`` (positions); their parameters become new leaves."""
        index = torch.tensor(keep, device=next(iter(self.params.values())).device)
        self.params = {n: p.detach().index_select(0, index).requires_grad_(p.requires_grad)
                       for n, p in self.params.items()}  # fmt: skip
        self.buffers = {n: b.index_select(0, index) for n, b in self.buffers.items()}


def member_losses(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy in fp32 per member, ``[R]``: logits ``[R, B, T, V]``, targets ``[R, B, T]`` (-100 not scored).

    Per-token losses of all members in one call, then each member's mean over its scored tokens: under ``vmap``,
    ``cross_entropy``'s decomposition imports sympy on its first call (about 0.4 s of CPU per job, issue #35)."""
    r, vocab = logits.shape[0], logits.shape[-1]
    per_token = F.cross_entropy(logits.float().reshape(-1, vocab), targets.reshape(-1), ignore_index=IGNORE,
                                reduction="none").reshape(r, -1)  # fmt: skip
    return per_token.sum(1) / (targets.reshape(r, -1) != IGNORE).sum(1)
