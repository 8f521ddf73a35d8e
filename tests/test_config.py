"""config.yaml validation: the shipped file is valid; each bad value fails naming its key."""

import copy

import pytest

from deltanet.config import ConfigError, REPO_ROOT, load_config, resolve_scale, selected, validate_config


@pytest.fixture(scope="module")
def config():
    return load_config(REPO_ROOT / "config.yaml")


def test_shipped_config_is_valid_and_selects_everything(config):
    assert len(selected(config, "variants")) == 24
    assert selected(config, "tasks") == [
        "compression", "context_recall", "fuzzy_recall", "memorization", "noisy_recall", "selective_copy"]
    assert resolve_scale({**config, "scale": "full"}) == "full"


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda c: c.update(colour="red"), "colour"),
        (lambda c: c.update(seeds="12345"), "seeds"),
        (lambda c: c.update(variants=["delta_net_4layr"]), "variants"),
        (lambda c: c.update(tasks=["recall"]), "tasks"),
        (lambda c: c.update(variants=[]), "variants"),
        (lambda c: c.update(scale="huge"), "scale"),
        (lambda c: c["scales"]["tiny"]["model"].update(chunk_size=0), "scales.tiny.model.chunk_size"),
        (lambda c: c["scales"]["tiny"]["task_overrides"]["compression"].update(sq_len=3),
         "scales.tiny.task_overrides.compression"),
    ],
)
def test_bad_values_fail_naming_the_key(config, edit, key):
    bad = copy.deepcopy(config)
    edit(bad)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(bad)
