"""By-construction identities: which models compute exactly another model's function at a scale's settings.

A variant can equal another model whatever the weights: ``normalize_keys`` re-normalises keys the mixer already
L2-normalises, and a variant that only changes how the carried state is updated equals its baseline while a
sequence fits in one chunk (the state it changes is never read; for some, two chunks, as the first state step
starts from S = 0). The check runs every model on the same random
tokens with shared random weights and lists the pairs whose logits agree within ``TOLERANCE`` (max abs).
``deltanet variants --identities`` runs it; the pipeline writes ``results/<scale>/identities.json`` for the report.

Per mixer kind, the weights come from the mixer's baseline (the variant with ``USES_KERNEL``: its loop is exactly
the baseline's), built with a fixed seed; every other model of that mixer loads them (``strict=False``), so all
shared modules are equal. A variant's own loop parameters get seeded N(0, 1) noise on top of their init: at their
init some make one variant equal another (``adaptive_gated_softmax_attention``'s gate starts at 0.5, which is
``hybrid_softmax_raw_attention``), an identity of the init, not of the construction. Models of different mixers
are never compared. A model is listed against the first model it equals in the order baseline, then names.

This is a property of the mixer loop, so the check uses the ``LanguageModel`` at each distinct sequence length of
the scale's task settings (the compression task's ``AutoEncoder`` shares its encoder) and the scale's ``model``
section as training reads it.
"""

from __future__ import annotations

import torch

from deltanet.model import LanguageModel, ModelConfig
from deltanet.tasks import setting_seq_lens
from deltanet.variants import MIXER_KINDS, get_variant, variant_names

# Max abs logit difference (logits ~0.8 at init) below which two models are identical. Not 1e-6: the loop runs in
# fp32, and normalize_keys' second normalisation of unit keys rounds differently, reaching 1.5e-6 at the full
# scale's seq 256-1024; the closest model that really differs is 5.7e-2 away.
TOLERANCE = 1e-5
SEED = 0  # weights and tokens
VOCAB_SIZE = 16  # any vocabulary shows the identity; MAD's smallest keeps the head cheap
BATCH_SIZE = 1
LOOP_PARAM_NOISE = 1.0  # std of the noise added to a variant's own loop parameters (they all pass a sigmoid or exp)


def mixer_order(names: list[str]) -> dict[str, list[str]]:
    """Per mixer kind: its baseline (``USES_KERNEL``) first, then the other variants by name."""
    variants = sorted((get_variant(n) for n in names), key=lambda v: (not v.uses_kernel, v.name))
    return {kind: [v.name for v in variants if v.mixer == kind] for kind in MIXER_KINDS}


@torch.no_grad()
def logits_per_model(order: list[str], model_cfg: dict, seq_len: int, batch_size: int = BATCH_SIZE,
                     errors: dict | None = None) -> dict:  # fmt: skip
    """Logits of every model in ``order`` on the same tokens, all loading the weights of ``order[0]``.

    With ``errors`` given, a model that raises is left out and its error recorded there (its own train jobs fail
    and say why; one broken variant must not block the report of the others)."""
    tokens = torch.randint(VOCAB_SIZE, (batch_size, seq_len), generator=torch.Generator().manual_seed(SEED))
    shared, out = None, {}
    for name in order:
        torch.manual_seed(SEED)
        try:
            model = LanguageModel(ModelConfig(vocab_size=VOCAB_SIZE, max_length=seq_len,
                                              **{**model_cfg, "variant": name}))  # fmt: skip
            if shared is None:
                shared = model.state_dict()
            else:
                own = model.load_state_dict(shared, strict=False).missing_keys  # the variant's own loop parameters
                noise = torch.Generator().manual_seed(SEED)
                for key in own:
                    param = model.get_parameter(key)
                    param.add_(LOOP_PARAM_NOISE * torch.randn(param.shape, generator=noise, dtype=param.dtype))
            out[name] = model.eval()(tokens)
        except Exception as err:  # recorded, not hidden: the CLI prints it and the JSON keeps it
            if errors is None:
                raise
            errors[name] = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
    return out


def find_identities(scale_cfg: dict, names: list[str] | None = None, batch_size: int = BATCH_SIZE) -> dict:
    """The check at every distinct sequence length of the scale: a JSON-ready dict (see ``deltanet variants``).

    ``identities``: one entry per (seq_len, variant, equal_to) with the max abs logit difference; ``settings``:
    each task's setting ids and their sequence lengths, so a reader maps identities onto the accuracies' cells.
    """
    settings = setting_seq_lens(scale_cfg)
    seq_lens = sorted({n for per_task in settings.values() for n in per_task.values()})
    orders = [o for o in mixer_order(names or variant_names()).values() if o]
    found, errors = [], {}
    for seq_len in seq_lens:
        for order in orders:
            logits = logits_per_model(order, scale_cfg["model"], seq_len, batch_size, errors)
            ran = [name for name in order if name in logits]
            for i, name in enumerate(ran[1:], start=1):
                for other in ran[:i]:
                    diff = (logits[name] - logits[other]).abs().max().item()
                    if diff <= TOLERANCE:
                        found.append({"seq_len": seq_len, "variant": name, "equal_to": other, "max_abs_diff": diff})
                        break
    return {
        "model": scale_cfg["model"], "tolerance": TOLERANCE, "seed": SEED, "batch_size": batch_size,
        "settings": settings, "identities": found, "errors": errors,
    }  # fmt: skip
