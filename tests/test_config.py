"""config.yaml validation: the shipped file is valid; each bad value fails naming its key."""

import copy

import pytest

from pathlib import Path

from deltanet.config import ConfigError, coerce_to_schema, load_config, validate_config
from deltanet.selection import resolve_scale, selected

REPO_ROOT = Path(__file__).resolve().parents[1]


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


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("variants", ["delta_net_4layr"], "unknown variant 'delta_net_4layr'; did you mean 'delta_net_4layer'? "
                                          "(deltanet variants lists all {variants})"),
        ("tasks", ["compression", "compresion"], "unknown task 'compresion'; did you mean 'compression'? "
                                                 "(deltanet tasks lists all 6)"),
        ("scale", "ful", "unknown scale 'ful'; did you mean 'full'? (allowed: auto, {scales})"),
        ("scale", "huge", "unknown scale 'huge' (allowed: auto, {scales})"),
    ],
    ids=["variant", "task", "scale", "no_close_match"],
)  # fmt: skip
def test_a_misspelt_name_gets_the_closest_match_in_one_line(config, key, value, message):
    """The closest registered name, if any; the full list only on request (a command), or when it is short."""
    bad = {**copy.deepcopy(config), key: value}
    with pytest.raises(ConfigError) as err:
        validate_config(bad, source="config.yaml")
    names = {"variants": len(selected(config, "variants")), "scales": ", ".join(config["scales"])}
    assert str(err.value) == f"config.yaml: key '{key}': {message.format(**names)}"


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda c: c.update(seeds=["1", "2"]), lambda c: c["seeds"] == [1, 2]),  # snakemake --config 'seeds=[1,2]'
        (lambda c: c["scales"]["tiny"]["optim"].update(lrs=["5e-3"], min_lr="1e-6"),  # YAML 1.1 reads 5e-3 as text
         lambda c: c["scales"]["tiny"]["optim"]["lrs"] == [0.005] and c["scales"]["tiny"]["optim"]["min_lr"] == 1e-6),
        (lambda c: c["container"].update(fakeroot="false"), lambda c: c["container"]["fakeroot"] is False),
        (lambda c: c["scales"]["tiny"]["model"].update(dim="64"), lambda c: c["scales"]["tiny"]["model"]["dim"] == 64),
    ],
    ids=["int_list", "yaml_1_1_floats", "boolean", "int"],
)  # fmt: skip
def test_numbers_written_as_strings_are_converted_where_the_schema_wants_them(config, edit, expected):
    given = copy.deepcopy(config)
    edit(given)
    converted = coerce_to_schema(given)
    assert expected(converted)
    validate_config(converted)


def test_strings_that_are_no_numbers_stay_for_the_schema_to_report(config):
    bad = copy.deepcopy(config)
    bad.update(seeds=["1", "1e3x"], variants=["12"])
    converted = coerce_to_schema(bad)
    assert converted["seeds"] == [1, "1e3x"] and converted["variants"] == ["12"]
    with pytest.raises(ConfigError, match=r"key 'seeds\.1': '1e3x' is not of type 'integer'"):
        validate_config(converted)


def test_load_config_reads_yaml_1_1_floats_and_names_the_line_of_a_syntax_error(tmp_path):
    text = (REPO_ROOT / "config.yaml").read_text()
    good = tmp_path / "good.yaml"
    good.write_text(text.replace("min_lr: 1.0e-6", "min_lr: 1e-6", 1))
    assert load_config(good)["scales"]["tiny"]["optim"]["min_lr"] == 1e-6
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("seeds: [12345]", "seeds: [12345", 1))
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    message = str(err.value)
    assert message.startswith(f"config file {bad}, line ") and "\n" not in message
    assert ": not valid YAML (expected ',' or ']', but got " in message
    seeds_line = 1 + text.splitlines().index("seeds: [12345]")
    assert seeds_line < int(message.split(", line ")[1].split(":")[0]) < seeds_line + 5  # where the parser noticed


@pytest.mark.parametrize("key, value", [("precision", "fp16"), ("capture", "yes")])
def test_the_engine_checks_its_choices_against_the_schema(key, value):
    """The engine's allowed values are the schema's enum (one list), with the schema's own wording."""
    from deltanet.config import check_choice, config_schema

    allowed = config_schema()["$defs"]["scale"]["properties"]["optim"]["properties"][key]["enum"]
    assert [check_choice("optim", key, v) for v in allowed] == allowed
    with pytest.raises(ValueError, match=rf"^optim\.{key} must be one of {', '.join(allowed)}; got '{value}'$"):
        check_choice("optim", key, value)
