"""MAD tasks: the registry (as data), the settings grid, and seeded train/test datasets.

A *setting* is one point of a task's grid: every generator field plus the example counts. The ``mad`` grid is the
baseline plus each swept field varied alone over its values, the rest at baseline (mad-lab mad/configs.py
``make_benchmark_mad_configs``; configs/tasks/<task>.yml): 11 + 14 + 11 + 6 + 11 + 13 = 66 settings.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from deltanet.hashing import config_hash
from deltanet.io import atomic_path
from deltanet.names import unknown_name
from deltanet.tasks import compression, context_recall, fuzzy_recall, memorization, noisy_recall, selective_copy
from deltanet.tasks.generator_kit import DATA_SEED, SIZE_FIELDS, Task

# Column order of the reference table (deltanet/data/reported_accuracies.csv).
DISPLAY_NAMES = {
    "compression": "Compress",
    "context_recall": "Context Recall",
    "fuzzy_recall": "Fuzzy Recall",
    "memorization": "Memorize",
    "noisy_recall": "Noisy Recall",
    "selective_copy": "Selective Copy",
}
TASK_IDS = tuple(DISPLAY_NAMES)

GRIDS = ("baseline", "mad")
DATA_VERSION = 1  # bump when a generator's output changes, so cached datasets are rebuilt
LEAKAGE_THRESHOLD = 0.001  # mad-lab mad/data/dataset.py check_for_leakage
SWEEP_TRAIN = [6400, 3200, 1600, 800]
# Fields not in a task's yml take MADConfig defaults (mad-lab mad/configs.py): num_test 1,280, multi_query True.
COUNTS = {"num_train_examples": 12_800, "num_test_examples": 1_280}
RECALL = {"multi_query": True, "noise_vocab_size": 0, "frac_noise": 0.0}

# Baselines and sweeps: mad-lab configs/tasks/<task>.yml (docs/mad-benchmark.md "Task overview").
_TASKS = [
    Task("compression", DISPLAY_NAMES["compression"], compression.generate,
         baseline={"vocab_size": 16, "seq_len": 32, **COUNTS},
         sweep={"vocab_size": [32, 64, 128], "seq_len": [64, 128, 256], "num_train_examples": SWEEP_TRAIN},
         check=compression.check, example={"seq_len": 12}, autoencoder=True),
    Task("context_recall", DISPLAY_NAMES["context_recall"], context_recall.generate,
         baseline={"vocab_size": 16, "seq_len": 128, **RECALL, **COUNTS},
         sweep={"vocab_size": [32, 64, 128], "seq_len": [256, 512, 1024], "num_train_examples": SWEEP_TRAIN},
         check=context_recall.check, example={"seq_len": 16}),
    Task("fuzzy_recall", DISPLAY_NAMES["fuzzy_recall"], fuzzy_recall.generate,
         baseline={"vocab_size": 16, "seq_len": 128, "k_motif_size": 3, "v_motif_size": 3, **RECALL, **COUNTS},
         sweep={"vocab_size": [32, 64, 128], "seq_len": [256, 512, 1024], "num_train_examples": SWEEP_TRAIN},
         check=fuzzy_recall.check, example={"seq_len": 24}),
    Task("memorization", DISPLAY_NAMES["memorization"], memorization.generate,
         baseline={"vocab_size": 256, "seq_len": 32, **COUNTS, "num_train_examples": 256},
         sweep={"vocab_size": [512, 1024, 2048, 4096, 8192]},
         check=memorization.check, example={"seq_len": 12}),
    # The yml's vocab sweep adds the 16 noise tokens: key+value vocabulary 32 / 64 / 128.
    Task("noisy_recall", DISPLAY_NAMES["noisy_recall"], noisy_recall.generate,
         baseline={"vocab_size": 32, "seq_len": 128, **RECALL, "noise_vocab_size": 16, "frac_noise": 0.2, **COUNTS},
         sweep={"vocab_size": [48, 80, 144], "seq_len": [256, 512, 1024], "num_train_examples": SWEEP_TRAIN,
                "frac_noise": [0.4, 0.6, 0.8]},
         check=noisy_recall.check, example={"seq_len": 16}),
    Task("selective_copy", DISPLAY_NAMES["selective_copy"], selective_copy.generate,
         baseline={"vocab_size": 16, "seq_len": 256, "num_tokens_to_copy": 16, **COUNTS},
         sweep={"vocab_size": [32, 64, 128], "seq_len": [512, 1024], "num_train_examples": SWEEP_TRAIN,
                "num_tokens_to_copy": [32, 64, 96]},
         check=selective_copy.check, example={"seq_len": 16, "num_tokens_to_copy": 4},
         extra_rngs=selective_copy.blank_stream),
]
REGISTRY = {task.id: task for task in _TASKS}
assert tuple(sorted(REGISTRY)) == tuple(sorted(TASK_IDS)), "every display name needs a registered task"


@dataclass(frozen=True)
class Setting:
    """One point of a task's grid. ``id`` is ``baseline`` or ``<field>=<value>`` (the one field varied)."""

    task: str
    id: str
    fields: dict

    @property
    def digest(self) -> str:
        """Content hash of what determines the data: task, fields, generator version."""
        return config_hash({"task": self.task, "fields": self.fields, "data_version": DATA_VERSION})


class Datasets(NamedTuple):
    train_inputs: np.ndarray
    train_targets: np.ndarray
    test_inputs: np.ndarray
    test_targets: np.ndarray


def get_task(task_id: str) -> Task:
    """The registered task ``task_id``; ValueError names the closest registered one (:mod:`deltanet.names`)."""
    if task_id not in REGISTRY:
        raise ValueError(unknown_name("task", task_id, TASK_IDS, listed_by="deltanet tasks"))
    return REGISTRY[task_id]


def task_settings(task_id: str, grid: str, overrides: dict | None = None) -> list[Setting]:
    """The task's settings under ``grid``: ``baseline`` (one) or ``mad`` (baseline + each swept field alone).

    ``overrides`` (e.g. a scale's ``task_overrides[task]``) replace baseline fields, so they reach every setting
    except in the field a setting varies: the swept value wins there, as MAD's ``make_benchmark_mad_configs``
    applies its keyword overrides to the baseline before the changes.
    """
    task = get_task(task_id)
    if grid not in GRIDS:
        raise ValueError(f"grid {grid!r} for task {task_id} is unknown; allowed: {', '.join(GRIDS)}")
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(task.baseline))
    if unknown:
        raise ValueError(f"overrides for task {task_id} have unknown field(s) {unknown}; "
                         f"allowed: {', '.join(task.baseline)}")
    baseline = {**task.baseline, **overrides}
    settings = [Setting(task_id, "baseline", baseline)]
    if grid == "mad":
        for name, values in task.sweep.items():
            settings += [Setting(task_id, f"{name}={value}", {**baseline, name: value}) for value in values]
    for setting in settings:
        _check_setting(task, setting)
    return settings


def setting_seq_lens(scale_cfg: dict) -> dict[str, dict[str, int]]:
    """``{task: {setting id: seq_len}}`` over a scale's grid and task overrides (what the identities check runs at)."""
    overrides = scale_cfg["task_overrides"]
    return {
        task: {s.id: s.fields["seq_len"] for s in task_settings(task, scale_cfg["grid"], overrides.get(task))}
        for task in TASK_IDS
    }


def _check_setting(task: Task, setting: Setting) -> None:
    for name, value in setting.fields.items():
        default = task.baseline[name]
        if isinstance(default, bool):
            ok, kind = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, kind = isinstance(value, int) and not isinstance(value, bool) and value >= 0, "an integer >= 0"
        else:
            ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        if not ok:
            raise ValueError(f"task {task.id}, setting {setting.id}: {name}={value!r} is invalid; allowed: {kind}")
    for name in SIZE_FIELDS:
        if setting.fields[name] < 1:
            raise ValueError(f"task {task.id}, setting {setting.id}: {name}={setting.fields[name]!r} is invalid; "
                             "allowed: an integer >= 1")
    try:
        task.check(setting.fields)
    except ValueError as err:
        raise ValueError(f"task {task.id}, setting {setting.id}: {err}") from None


def make_datasets(setting: Setting, cache_dir: str | Path | None = None) -> Datasets:
    """Train then test rows from one ``np.random.default_rng(12345)`` stream (mad-lab mad/configs.py
    ``instance_fn_kwargs``, mad/data/dataset.py ``generate_data``), then MAD's leakage check.

    With ``cache_dir``, the arrays are kept in ``<cache_dir>/<task>-<digest>.npz`` (written atomically) and read
    back on the next call with the same content.
    """
    task = get_task(setting.task)
    _check_setting(task, setting)
    path = Path(cache_dir) / f"{setting.task}-{setting.digest[:16]}.npz" if cache_dir is not None else None
    if path is not None and path.is_file():
        with np.load(path) as stored:
            data = Datasets(*(stored[name] for name in Datasets._fields))
    else:
        knobs = {k: v for k, v in setting.fields.items() if k not in SIZE_FIELDS}
        rng = np.random.default_rng(DATA_SEED)
        extra = task.extra_rngs()
        train = task.generate(setting.fields["num_train_examples"], rng=rng, is_training=True, **knobs, **extra)
        test = task.generate(setting.fields["num_test_examples"], rng=rng, is_training=False, **knobs, **extra)
        data = Datasets(*train, *test)
        if path is not None:
            with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                np.savez(handle, **data._asdict())
    check_leakage(data.train_inputs, data.test_inputs, where=f"{setting.task} {setting.id}")
    return data


def check_leakage(train_inputs: np.ndarray, test_inputs: np.ndarray, where: str = "") -> float:
    """Fraction of distinct test input rows also in train; warns above 0.1% (mad-lab mad/data/dataset.py
    ``check_for_leakage``)."""
    train_rows = {row.tobytes() for row in np.ascontiguousarray(train_inputs, dtype=np.int64)}
    test_rows = {row.tobytes() for row in np.ascontiguousarray(test_inputs, dtype=np.int64)}
    fraction = len(test_rows & train_rows) / len(test_rows)
    if fraction > LEAKAGE_THRESHOLD:
        warnings.warn(f"data leakage in {where or 'dataset'}: {fraction:.2%} of distinct test input rows are also "
                      f"train rows (threshold {LEAKAGE_THRESHOLD:.1%})", stacklevel=2)
    return fraction
