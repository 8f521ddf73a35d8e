"""Memorization (MAD "memorization", M): recall values of a fixed key→value map learned in the weights.

Rule (mad-lab mad/data/instances.py ``generate_memorization_instance``, ``generate_kv_map``; the map is built in
mad/configs.py ``instance_fn_kwargs``; docs/mad-benchmark.md §4):
- insert token ``vocab_size - 1``; keys ``[0, (V-1)//2)``, values ``[(V-1)//2, V-1)`` with ``V = vocab_size``;
- the map: a generator seeded 12345 of its own shuffles the keys, then the values, and zips them (one value unused
  when V-1 is odd); the same map serves train and test and every call;
- a row: ``seq_len/2`` pairs ``(key, insert)``, keys uniform with replacement; targets -100 at keys and the key's
  value at each insert token. No shift.
Draws are MAD's, in MAD's order (one unused draw of the noise-exempt slot, then the keys), so rows are byte-equal
to MAD's generator on the same stream. MAD's noise option is unused by the benchmark and left out.
"""

from __future__ import annotations

import numpy as np

from deltanet.tasks.generator_kit import DATA_SEED, IGNORE, require


def key_value_map(vocab_size: int, seed: int = DATA_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The fixed map: ``(keys, values)`` with ``keys`` in MAD's shuffled order and ``values[i]`` the value of
    ``keys[i]``. The shuffles match MAD's shuffle of its permutation lists draw for draw."""
    map_rng = np.random.default_rng(seed)
    num_keys = (vocab_size - 1) // 2
    keys = np.arange(num_keys)
    map_rng.shuffle(keys)
    values = np.arange(num_keys, vocab_size - 1)
    map_rng.shuffle(values)
    return keys, values[:num_keys]


def generate(
    num_examples: int,
    *,
    rng: np.random.Generator,
    is_training: bool,
    vocab_size: int = 256,
    seq_len: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """``num_examples`` rows of memorization: ``(inputs, targets)``, each ``[num_examples, seq_len]``.
    ``is_training`` is accepted for the common signature; MAD ignores it too."""
    check(dict(vocab_size=vocab_size, seq_len=seq_len))
    keys, values = key_value_map(vocab_size)
    value_of = np.empty(len(keys), dtype=np.int64)
    value_of[keys] = values
    pairs = seq_len // 2
    # Per row MAD draws the noise-exempt slot in [0, pairs), then `pairs` indices into the shuffled key list.
    highs = np.tile(np.r_[pairs, np.full(pairs, len(keys))], num_examples)
    drawn = rng.integers(0, highs).reshape(num_examples, pairs + 1)[:, 1:]
    row_keys = keys[drawn]
    inputs = np.stack([row_keys, np.full_like(row_keys, vocab_size - 1)], axis=2).reshape(num_examples, -1)
    targets = np.stack([np.full_like(row_keys, IGNORE), value_of[row_keys]], axis=2).reshape(num_examples, -1)
    return inputs.astype(np.int64), targets.astype(np.int64)


def check(fields: dict) -> None:
    """Impossible memorization settings: odd seq_len (rows are key-insert pairs), no key or value."""
    require(fields["seq_len"] % 2 == 0 and fields["seq_len"] >= 2, "seq_len", fields["seq_len"],
            "an even number >= 2 (key, insert-token pairs)")
    require(fields["vocab_size"] >= 3, "vocab_size", fields["vocab_size"], ">= 3 (a key, a value, the insert token)")
