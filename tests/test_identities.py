"""By-construction identities (`deltanet variants --identities`): the known ones are found, and only those."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from deltanet.config import load_config
from deltanet.identities import find_identities
from deltanet.report.analysis import DELTA_BASELINE, REFERENCE_IDENTICAL_PAIR
from deltanet.cli import variants as variants_cli

CONFIG = load_config(Path(__file__).resolve().parents[1] / "config.yaml")
PREFIX = DELTA_BASELINE + "_"
# Variants that change only how the carried state is updated: the state they change is read from the second chunk on.
STATE_ONLY = ["adam_state_update", "rmsprop_state_update", "momentum_state_update", "layernorm_state_update",
              "sigmoid_error_forget_gate_state_update"]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread, as the CLI uses (it sets it; restored for the other test modules)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=["tiny", "full"])
def found(request):
    """(scale section, {seq_len: {variant: equal_to}}) of the check at that scale of config.yaml."""
    section = CONFIG["scales"][request.param]
    result = find_identities(section)
    seq_lens = {n for per_task in result["settings"].values() for n in per_task.values()}
    pairs = {n: {} for n in seq_lens}
    for i in result["identities"]:
        pairs[i["seq_len"]][i["variant"]] = i["equal_to"]
    return section, pairs


def test_normalize_keys_equals_the_baseline_at_every_setting(found):
    _, pairs = found
    variant, baseline = REFERENCE_IDENTICAL_PAIR  # the pair whose reported gap is the report's noise floor
    assert all(p.get(variant) == baseline for p in pairs.values()), pairs


def test_state_only_variants_equal_the_baseline_within_one_chunk(found):
    section, pairs = found
    chunk = section["model"]["chunk_size"]
    for seq_len, p in pairs.items():
        for name in STATE_ONLY:
            variant = f"{PREFIX}{name}_in_for_loop"
            if seq_len <= chunk:
                assert p.get(variant) == DELTA_BASELINE, (seq_len, variant)
            elif seq_len > 2 * chunk:  # read after two state steps: they really differ
                assert variant not in p, (seq_len, variant)


def test_only_models_of_one_mixer_and_no_identity_of_the_init(found):
    _, pairs = found
    for p in pairs.values():
        assert "gated_delta_net_4layer" not in p.values()  # (a baseline is never a key: it is what others equal)
        # its gate starts at 0.5, i.e. at hybrid_softmax_raw_attention: equal at init, not by construction
        assert f"{PREFIX}adaptive_gated_softmax_attention_in_for_loop" not in p
        assert f"{PREFIX}hybrid_softmax_raw_attention_in_for_loop" not in p


def test_tiny_topk_softmax_equals_softmax():
    """Top-8 of an 8-token chunk keeps every key: at the tiny scale (chunk 8) the two are one model."""
    section = CONFIG["scales"]["tiny"]
    assert section["model"]["chunk_size"] == 8  # the premise; the test must change with the tiny scale
    result = find_identities(section, [DELTA_BASELINE, f"{PREFIX}softmax_attention_in_for_loop",
                                       f"{PREFIX}topk_softmax_attention_in_for_loop"])  # fmt: skip
    topk = [(i["seq_len"], i["equal_to"]) for i in result["identities"] if "topk" in i["variant"]]
    assert topk == [(8, f"{PREFIX}softmax_attention_in_for_loop"), (32, f"{PREFIX}softmax_attention_in_for_loop")]


def test_cli_writes_json_and_refuses_an_unknown_scale(tmp_path, capsys):
    out = tmp_path / "identities.json"
    assert variants_cli.list_main(["--identities", "--scale", "tiny", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["scale"] == "tiny" and result["model"] == CONFIG["scales"]["tiny"]["model"]
    assert result["settings"]["compression"] == {"baseline": 8}
    assert {"seq_len": 32, "variant": REFERENCE_IDENTICAL_PAIR[0], "equal_to": DELTA_BASELINE} in [
        {k: i[k] for k in ("seq_len", "variant", "equal_to")} for i in result["identities"]]  # fmt: skip
    assert "identities at scale 'tiny' (seq lens 8, 32;" in capsys.readouterr().out
    assert variants_cli.list_main(["--identities", "--scale", "huge"]) == 2
    allowed = ", ".join(CONFIG["scales"])
    assert capsys.readouterr().err == f"deltanet variants: error: unknown scale 'huge' (allowed: {allowed})\n"


def test_a_model_that_fails_to_run_is_recorded_and_does_not_block_the_others():
    from deltanet.identities import logits_per_model

    errors = {}
    model = CONFIG["scales"]["tiny"]["model"]
    out = logits_per_model([DELTA_BASELINE, "no_such_variant", REFERENCE_IDENTICAL_PAIR[0]], model, 8, 1, errors)
    assert set(out) == {DELTA_BASELINE, REFERENCE_IDENTICAL_PAIR[0]}
    assert list(errors) == ["no_such_variant"] and errors["no_such_variant"].startswith("ValueError: unknown variant")
