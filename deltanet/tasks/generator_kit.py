"""What every MAD task generator uses: the ``Task`` record, the ignore index, the data seed, row chunking, checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

IGNORE = -100  # target_ignore_idx in mad-lab mad/data/instances.py (target_ignore_index in mad/configs.py)
DATA_SEED = 12345  # MADConfig.seed in mad-lab mad/configs.py: seeds the data stream and the memorization map
SIZE_FIELDS = ("num_train_examples", "num_test_examples")
CHUNK_TOKENS = 1 << 21  # rows are generated in chunks of about this many tokens to bound peak memory


@dataclass(frozen=True)
class Task:
    """One MAD task: its generator, its baseline setting, the one-at-a-time sweep, and its setting checks.

    ``generate(num_examples, *, rng, is_training, **knobs, **extra_rngs)`` returns ``(inputs, targets)`` int64
    arrays; ``knobs`` are the setting's fields without the example counts. ``check(fields)`` raises ValueError for
    an impossible combination. ``extra_rngs()`` builds side streams shared by the train and test calls.
    """

    id: str
    display_name: str
    generate: Callable[..., tuple[np.ndarray, np.ndarray]]
    baseline: dict
    sweep: dict
    check: Callable[[dict], None]
    example: dict  # small overrides of the baseline that make a readable example row (`deltanet tasks`)
    autoencoder: bool = False
    extra_rngs: Callable[[], dict] = field(default=dict)


def require(condition: bool, field_name: str, value: object, allowed: str) -> None:
    """Raise ValueError naming the field, its bad value and what is allowed, unless ``condition`` holds."""
    if not condition:
        raise ValueError(f"{field_name}={value!r} is impossible; allowed: {allowed}")


def in_chunks(num_examples: int, row_len: int, make: Callable[[int], tuple[np.ndarray, np.ndarray]]):
    """Call ``make(rows)`` on consecutive chunks of rows and stack the results (same stream order as one call)."""
    step = max(1, CHUNK_TOKENS // max(row_len, 1))
    parts = [make(min(step, num_examples - start)) for start in range(0, num_examples, step)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def shift(raw_inputs: np.ndarray, raw_targets: np.ndarray, is_training: bool) -> tuple[np.ndarray, np.ndarray]:
    """The recall tasks' shift (mad-lab mad/data/instances.py): inputs ``raw[:-1]``; training targets ``raw[1:]``
    (plain next-token prediction everywhere), test targets the masked answers shifted by one."""
    return raw_inputs[:, :-1], (raw_inputs if is_training else raw_targets)[:, 1:]
