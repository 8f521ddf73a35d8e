"""MAD tasks: the grid, bad input, structural rules per task on generated batches, determinism, leakage, cache."""

import itertools
import warnings

import numpy as np
import pytest

from deltanet.tasks import (
    DISPLAY_NAMES, TASK_IDS, Datasets, check_leakage, get_task, make_datasets, task_settings,
)
from deltanet.cli import tasks as tasks_cli
from deltanet.tasks import fuzzy_recall, memorization
from deltanet.tasks.generator_kit import IGNORE

SMALL = {"num_train_examples": 64, "num_test_examples": 64}

# mad-lab configs/tasks/<task>.yml: the values each field is swept over (docs/mad-benchmark.md "Task overview").
MAD_SWEEPS = {
    "context_recall": {"vocab_size": [32, 64, 128], "seq_len": [256, 512, 1024],
                       "num_train_examples": [6400, 3200, 1600, 800]},
    "noisy_recall": {"vocab_size": [48, 80, 144], "seq_len": [256, 512, 1024],
                     "num_train_examples": [6400, 3200, 1600, 800], "frac_noise": [0.4, 0.6, 0.8]},
    "fuzzy_recall": {"vocab_size": [32, 64, 128], "seq_len": [256, 512, 1024],
                     "num_train_examples": [6400, 3200, 1600, 800]},
    "memorization": {"vocab_size": [512, 1024, 2048, 4096, 8192]},
    "compression": {"vocab_size": [32, 64, 128], "seq_len": [64, 128, 256],
                    "num_train_examples": [6400, 3200, 1600, 800]},
    "selective_copy": {"vocab_size": [32, 64, 128], "seq_len": [512, 1024],
                       "num_train_examples": [6400, 3200, 1600, 800], "num_tokens_to_copy": [32, 64, 96]},
}


def data(task_id, **fields):
    return make_datasets(task_settings(task_id, "baseline", {**SMALL, **fields})[0])


# --- grid ---------------------------------------------------------------------------------------------------------

def test_display_names_in_reference_column_order():
    assert TASK_IDS == ("compression", "context_recall", "fuzzy_recall", "memorization", "noisy_recall",
                        "selective_copy")
    assert [get_task(t).display_name for t in TASK_IDS] == [
        "Compress", "Context Recall", "Fuzzy Recall", "Memorize", "Noisy Recall", "Selective Copy"]
    assert DISPLAY_NAMES["memorization"] == "Memorize"
    assert [t for t in TASK_IDS if get_task(t).autoencoder] == ["compression"]


def test_mad_grid_has_66_settings_with_listed_values_and_readable_ids():
    counts = {t: len(task_settings(t, "mad")) for t in TASK_IDS}
    assert counts == {"context_recall": 11, "noisy_recall": 14, "fuzzy_recall": 11, "memorization": 6,
                      "compression": 11, "selective_copy": 13}
    assert sum(counts.values()) == 66
    for task_id, sweep in MAD_SWEEPS.items():
        settings = task_settings(task_id, "mad")
        baseline = settings[0]
        assert baseline.id == "baseline" and baseline.fields["num_test_examples"] == 1280
        expected_ids = ["baseline"] + [f"{k}={v}" for k, values in sweep.items() for v in values]
        assert [s.id for s in settings] == expected_ids
        for setting in settings[1:]:
            name, value = setting.id.split("=")
            changed = {k for k in setting.fields if setting.fields[k] != baseline.fields[k]}
            assert changed == {name} and str(setting.fields[name]) == value
        assert len({s.digest for s in settings}) == len(settings)


def test_baselines_follow_mad_configs():
    fields = {t: task_settings(t, "baseline")[0].fields for t in TASK_IDS}
    assert fields["memorization"] == {"vocab_size": 256, "seq_len": 32, "num_train_examples": 256,
                                      "num_test_examples": 1280}
    assert fields["noisy_recall"]["noise_vocab_size"] == 16 and fields["noisy_recall"]["frac_noise"] == 0.2
    assert fields["fuzzy_recall"]["k_motif_size"] == fields["fuzzy_recall"]["v_motif_size"] == 3
    assert fields["selective_copy"]["num_tokens_to_copy"] == 16
    assert all(f.get("multi_query", True) for f in fields.values())
    assert all(f["num_test_examples"] == 1280 for f in fields.values())


def test_overrides_reach_every_setting_except_the_swept_field():
    settings = task_settings("context_recall", "mad", {"seq_len": 32, "num_test_examples": 256})
    assert all(s.fields["num_test_examples"] == 256 for s in settings)
    assert [s.fields["seq_len"] for s in settings] == [32, 32, 32, 32, 256, 512, 1024, 32, 32, 32, 32]
    assert [s.fields["seq_len"] for s in task_settings("context_recall", "baseline", {"seq_len": 32})] == [32]


@pytest.mark.parametrize("call, match", [
    (lambda: get_task("copying"), r"^unknown task 'copying' \(deltanet tasks lists all 6\)$"),
    (lambda: task_settings("context_recall", "full"), r"grid 'full'.*allowed: baseline, mad"),
    (lambda: task_settings("memorization", "baseline", {"frac_noise": 0.1}),
     r"unknown field\(s\) \['frac_noise'\]; allowed: vocab_size, seq_len"),
    (lambda: task_settings("context_recall", "baseline", {"seq_len": 127}), r"seq_len=127 .*allowed: an even"),
    (lambda: task_settings("noisy_recall", "baseline", {"seq_len": 33}), r"seq_len=33"),
    (lambda: task_settings("fuzzy_recall", "baseline", {"seq_len": 12}), r"seq_len=12 .*> 2\*\(k_motif"),
    (lambda: task_settings("selective_copy", "baseline", {"seq_len": 33}),
     r"seq_len=33 .*> 2\*num_tokens_to_copy\+1 = 33"),
    (lambda: task_settings("selective_copy", "mad", {"seq_len": 40}),
     r"setting num_tokens_to_copy=32: seq_len=40"),
    (lambda: task_settings("fuzzy_recall", "baseline", {"vocab_size": 6}), r"vocab_size=6 .*allowed: >= 7"),
    (lambda: task_settings("noisy_recall", "baseline", {"frac_noise": 1.0}), r"frac_noise=1.0"),
    (lambda: task_settings("compression", "baseline", {"seq_len": "32"}), r"seq_len='32' is invalid"),
    (lambda: task_settings("compression", "baseline", {"num_test_examples": 0}), r"num_test_examples=0"),
])
def test_bad_input_raises_value_error_naming_the_field(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- structure per task -------------------------------------------------------------------------------------------

def assert_train_is_next_token(inputs, targets):
    np.testing.assert_array_equal(targets[:, :-1], inputs[:, 1:])


def test_context_recall_keys_values_and_scored_answers():
    d = data("context_recall")
    assert d.test_inputs.shape == (64, 127) and d.test_inputs.dtype == np.int64
    assert_train_is_next_token(d.train_inputs, d.train_targets)
    keys, values = d.test_inputs[:, 0::2], d.test_inputs[:, 1::2]
    assert keys.min() >= 0 and keys.max() < 8 and values.min() >= 8 and values.max() < 16
    for row_inputs, row_targets in zip(d.test_inputs, d.test_targets):
        stored = {}
        for p in range(0, 126, 2):
            key, value = row_inputs[p], row_inputs[p + 1]
            assert stored.setdefault(key, value) == value
            assert row_targets[p] == (value if p > 2 * list(row_inputs[0::2]).index(key) else IGNORE)
        assert row_targets[126] == stored[row_inputs[126]]  # the probe key was shown and predicts its value
        assert (row_targets[1::2] == IGNORE).all()


def test_context_recall_baseline_scores_56_to_57_tokens_per_test_row():
    setting = task_settings("context_recall", "baseline", {"num_train_examples": 1, "num_test_examples": 400})[0]
    scored = (make_datasets(setting).test_targets != IGNORE).sum(axis=1)
    assert 55.5 <= scored.mean() <= 57.5 and scored.max() <= 63


def test_noisy_recall_noise_never_scored_at_test_and_predicted_in_training():
    d = data("noisy_recall", frac_noise=0.6)
    scored = d.test_targets != IGNORE
    assert (d.test_inputs[scored] < 8).all()  # a scored position holds a key
    assert ((d.test_targets[scored] >= 8) & (d.test_targets[scored] < 16)).all()
    noise = d.test_inputs >= 16
    assert noise.any() and d.test_inputs.max() < 32 and not (scored & noise).any()
    assert_train_is_next_token(d.train_inputs, d.train_targets)
    assert (d.train_targets >= 16).any()
    assert 2 < scored.sum(axis=1).mean() < 43


def parse_fuzzy(row_inputs, row_targets, num_keys, pad):
    """(key, value, value targets) pieces of a test row, rebuilding the raw row from the shift."""
    raw = np.append(row_inputs, row_targets[-1])
    raw_targets = np.append(IGNORE, row_targets)
    start = np.argmax(raw != pad)
    assert (raw[:start] == pad).all() and (raw[start:] != pad).all()  # left padding only
    is_key = raw[start:] < num_keys
    bounds = np.flatnonzero(np.diff(is_key.astype(int))) + 1 + start
    runs = np.split(np.arange(start, len(raw)), bounds - start)
    assert len(runs) % 2 == 0 and raw[runs[0][0]] < num_keys
    return [(tuple(raw[k]), tuple(raw[v]), tuple(raw_targets[v])) for k, v in zip(runs[0::2], runs[1::2])]


def test_fuzzy_recall_left_pad_test_keys_of_k_motif_size_and_consistent_answers():
    d = data("fuzzy_recall", seq_len=256)
    assert d.test_inputs.shape == (64, 256)
    assert_train_is_next_token(d.train_inputs, d.train_targets)
    scored_total = 0
    for row_inputs, row_targets in zip(d.test_inputs, d.test_targets):
        pieces = parse_fuzzy(row_inputs, row_targets, num_keys=7, pad=15)
        stored, shown = {}, set()
        for i, (key, value, targets) in enumerate(pieces):
            assert len(key) == 3 and len(set(key)) == 3  # test keys: k_motif_size distinct tokens
            assert 1 <= len(value) <= 3 and len(set(value)) == len(value) and min(value) >= 7 and max(value) < 15
            assert stored.setdefault(key, value) == value
            last = i == len(pieces) - 1
            assert targets == (value if key in shown or last else (IGNORE,) * len(value))
            scored_total += (np.array(targets) != IGNORE).sum()
            shown.add(key)
    assert scored_total > 64


def test_fuzzy_recall_training_uses_key_sizes_1_to_k_motif():
    d = data("fuzzy_recall")
    sizes = {len(key) for inputs, targets in zip(d.train_inputs, d.train_targets)
             for key, _, _ in parse_fuzzy(inputs, targets, 7, 15)}
    assert sizes == {1, 2, 3}


def test_fuzzy_recall_decodes_permutations_in_itertools_order():
    for n, size in [(7, 3), (8, 2), (5, 5), (63, 1)]:
        expected = np.array(list(itertools.permutations(range(n), size)))
        np.testing.assert_array_equal(fuzzy_recall.decode_permutation(np.arange(len(expected)), n, size), expected)


def test_fuzzy_recall_largest_vocabulary_does_not_materialise_permutations():
    inputs, targets = fuzzy_recall.generate(32, rng=np.random.default_rng(0), is_training=True, vocab_size=128)
    assert inputs.shape == (32, 128) and inputs.max() <= 127


def test_memorization_targets_follow_the_fixed_map_shared_by_train_and_test():
    d = data("memorization")
    keys, values = memorization.key_value_map(256)
    assert sorted(keys) == list(range(127)) and len(set(values)) == 127 and set(values) < set(range(127, 255))
    value_of = dict(zip(keys.tolist(), values.tolist()))
    for inputs, targets in ((d.train_inputs, d.train_targets), (d.test_inputs, d.test_targets)):
        assert (inputs[:, 1::2] == 255).all() and (targets[:, 0::2] == IGNORE).all()
        assert [value_of[k] for k in inputs[:, 0::2].ravel()] == targets[:, 1::2].ravel().tolist()
    again_keys, again_values = memorization.key_value_map(256)
    np.testing.assert_array_equal(again_keys, keys)
    np.testing.assert_array_equal(again_values, values)


def test_compression_targets_equal_inputs_at_every_position():
    d = data("compression")
    for inputs, targets in ((d.train_inputs, d.train_targets), (d.test_inputs, d.test_targets)):
        np.testing.assert_array_equal(inputs, targets)
        assert (inputs[:, -1] == 15).all() and (inputs[:, :-1] < 15).all()


def test_selective_copy_targets_are_the_data_tokens_in_order():
    d = data("selective_copy", seq_len=64, num_tokens_to_copy=8)
    n, copy_at = 8, 64 - 8 - 1
    for inputs, targets in ((d.train_inputs, d.train_targets), (d.test_inputs, d.test_targets)):
        assert (inputs[:, copy_at] == 15).all() and (inputs[:, copy_at + 1:] == 14).all()
        assert (targets[:, :copy_at + 1] == IGNORE).all()
        for row_inputs, row_targets in zip(inputs, targets):
            data_tokens = row_inputs[:copy_at][row_inputs[:copy_at] != 14]
            np.testing.assert_array_equal(data_tokens, row_targets[-n:])
            assert row_inputs[copy_at - 1] == row_targets[-1]  # last data token right before the copy token


# MAD's own generators (mad-lab mad/data/instances.py at 0f49a45, run once with default_rng(12345), and the global
# numpy RNG seeded 12345 for selective copying; 8 train rows then 4 test rows) gave these values. These three tasks
# draw in MAD's order, so their rows must match exactly.
def test_byte_equal_to_mad_for_memorization_compression_selective_copy():
    small = {"num_train_examples": 8, "num_test_examples": 4}
    m = make_datasets(task_settings("memorization", "baseline", small)[0])
    assert m.train_inputs[0, 0::2].tolist() == [115, 4, 77, 19, 37, 82, 96, 13, 20, 10, 63, 87, 84, 124, 105, 71]
    assert m.test_targets[3, 1::2].tolist() == [138, 247, 136, 252, 201, 219, 229, 165, 242, 142, 252, 235, 217,
                                                 250, 242, 134]
    c = make_datasets(task_settings("compression", "baseline", small)[0])
    assert c.train_inputs[0].tolist() == [10, 3, 11, 4, 3, 11, 9, 10, 14, 5, 12, 4, 8, 8, 3, 2, 3, 10, 9, 14, 10, 3,
                                          13, 14, 10, 10, 1, 1, 3, 6, 1, 15]
    s = make_datasets(task_settings("selective_copy", "baseline", small)[0])
    assert np.flatnonzero(s.train_inputs[0, :239] != 14).tolist() == [15, 29, 49, 62, 70, 92, 106, 120, 134, 151,
                                                                       159, 180, 198, 212, 230, 238]
    assert s.train_targets[0, -16:].tolist() == [9, 3, 11, 4, 2, 11, 8, 9, 13, 5, 11, 4, 7, 8, 2, 2]
    assert np.flatnonzero(s.test_inputs[3, :239] != 14).tolist() == [13, 33, 44, 65, 80, 98, 119, 129, 142, 161,
                                                                      166, 175, 195, 211, 224, 238]


# --- streams, determinism, leakage, cache -------------------------------------------------------------------------

@pytest.mark.parametrize("task_id", TASK_IDS)
def test_same_setting_gives_identical_arrays(task_id):
    fields = {"seq_len": 32, **({"num_tokens_to_copy": 4} if task_id == "selective_copy" else {})}
    first, second = data(task_id, **fields), data(task_id, **fields)
    for a, b in zip(first, second):
        assert a.dtype == np.int64
        np.testing.assert_array_equal(a, b)


def test_test_set_continues_the_train_stream():
    task = get_task("compression")
    rng = np.random.default_rng(12345)
    task.generate(64, rng=rng, is_training=True, vocab_size=16, seq_len=32)
    continued, _ = task.generate(64, rng=rng, is_training=False, vocab_size=16, seq_len=32)
    d = data("compression")
    np.testing.assert_array_equal(d.test_inputs, continued)
    assert not np.array_equal(d.test_inputs, d.train_inputs)


def test_leakage_warning_fires_on_a_leaky_setting_only():
    with pytest.warns(UserWarning, match="data leakage in compression baseline: 100.00%"):
        data("compression", vocab_size=2, seq_len=3)  # one data token value: every row is [0, 0, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data("compression")
    train = np.arange(40).reshape(10, 4)
    with pytest.warns(UserWarning, match="10.00%"):
        assert check_leakage(train, np.concatenate([train[:1], train[:9] + 100])) == pytest.approx(0.1)


def test_cache_round_trip(tmp_path):
    setting = task_settings("selective_copy", "baseline", {**SMALL, "seq_len": 32, "num_tokens_to_copy": 4})[0]
    built = make_datasets(setting, cache_dir=tmp_path)
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == [f"selective_copy-{setting.digest[:16]}.npz"]
    loaded = make_datasets(setting, cache_dir=tmp_path)
    assert isinstance(loaded, Datasets)
    for a, b in zip(built, loaded):
        np.testing.assert_array_equal(a, b)


def test_cli_prints_each_task_count_and_example(capsys):
    assert tasks_cli.main([]) == 0
    out = capsys.readouterr().out
    for task_id in TASK_IDS:
        assert f"{task_id} ({DISPLAY_NAMES[task_id]}): {len(task_settings(task_id, 'mad'))} settings" in out
    assert "total: 66 settings" in out and out.count("test  targets") == 6
