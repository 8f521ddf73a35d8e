"""Selective copying (MAD "selective-copying", SC): copy the data tokens scattered among blanks, in order.

Rule (mad-lab mad/data/instances.py ``generate_copying_instance(selective=True)``; docs/mad-benchmark.md §6):
- copy token ``vocab_size - 1``, blank ``vocab_size - 2``, data tokens ``[0, vocab_size - 2)``;
- ``n = num_tokens_to_copy`` data tokens uniform with replacement; ``b = seq_len - 2n - 1`` blanks, each inserted
  before the data token at a position uniform in ``[0, n)`` (numpy ``insert``), so the last data token is always
  directly followed by the copy token; then the copy token and ``n`` blanks;
- targets -100 for the first ``n + b + 1`` positions, then the data tokens in order. No shift.

Blank positions: MAD draws them with numpy's *global* RNG (``np.random.randint``), which mad-lab train.py seeds
with 12345 right before generating train then test. Here they come from ``blank_rng``, a dedicated
``np.random.RandomState(12345)`` that ``make_datasets`` shares between the train and the test call, so the global
state is never touched and the positions are MAD's. The data tokens come from ``rng`` in MAD's order: rows are
byte-equal to MAD's generator.
"""

from __future__ import annotations

import numpy as np

from deltanet.tasks.generator_kit import DATA_SEED, IGNORE, require


def blank_stream() -> dict:
    """The side stream standing in for MAD's seeded global numpy RNG."""
    return {"blank_rng": np.random.RandomState(DATA_SEED)}


def generate(
    num_examples: int,
    *,
    rng: np.random.Generator,
    is_training: bool,
    blank_rng: np.random.RandomState,
    vocab_size: int = 16,
    seq_len: int = 256,
    num_tokens_to_copy: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """``num_examples`` rows of selective copying: ``(inputs, targets)``, each ``[num_examples, seq_len]``.
    ``is_training`` is accepted for the common signature; train and test rows have the same form."""
    check(dict(vocab_size=vocab_size, seq_len=seq_len, num_tokens_to_copy=num_tokens_to_copy))
    n = num_tokens_to_copy
    blanks = seq_len - 2 * n - 1
    data = rng.integers(0, vocab_size - 2, (num_examples, n))
    insert_at = blank_rng.randint(0, n, (num_examples, blanks))
    rows = np.arange(num_examples)[:, None]
    blanks_before = np.bincount((rows * n + insert_at).ravel(), minlength=num_examples * n).reshape(num_examples, n)
    data_positions = np.arange(n) + np.cumsum(blanks_before, axis=1)

    inputs = np.full((num_examples, seq_len), vocab_size - 2, dtype=np.int64)
    inputs[rows, data_positions] = data
    inputs[:, n + blanks] = vocab_size - 1
    targets = np.full((num_examples, seq_len), IGNORE, dtype=np.int64)
    targets[:, seq_len - n:] = data
    return inputs, targets


def check(fields: dict) -> None:
    """Impossible selective-copy settings: no token to copy, no blank, no data vocabulary."""
    n, seq_len = fields["num_tokens_to_copy"], fields["seq_len"]
    require(n >= 1, "num_tokens_to_copy", n, ">= 1")
    require(seq_len > 2 * n + 1, "seq_len", seq_len, f"> 2*num_tokens_to_copy+1 = {2 * n + 1}")
    require(fields["vocab_size"] >= 3, "vocab_size", fields["vocab_size"], ">= 3 (data tokens, blank, copy token)")
