"""Compression (MAD "compression", C): reproduce a whole sequence from one pooled state (AutoEncoder backbone).

Rule (mad-lab mad/data/instances.py ``generate_compression_instance``; docs/mad-benchmark.md §5): ``seq_len - 1``
tokens uniform in ``[0, vocab_size - 1)`` then the compression token ``vocab_size - 1``; targets equal the inputs at
every position, the compression token included. No shift. MAD's noise option is unused by the benchmark
(frac_noise 0) and left out. Draws are MAD's, in MAD's order, so rows are byte-equal to MAD's generator on the
same stream.
"""

from __future__ import annotations

import numpy as np

from deltanet.tasks.generator_kit import require


def generate(
    num_examples: int,
    *,
    rng: np.random.Generator,
    is_training: bool,
    vocab_size: int = 16,
    seq_len: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """``num_examples`` rows of compression: ``(inputs, targets)``, each ``[num_examples, seq_len]``, equal.
    ``is_training`` is accepted for the common signature; train and test rows have the same form."""
    check(dict(vocab_size=vocab_size, seq_len=seq_len))
    tokens = rng.integers(0, vocab_size - 1, (num_examples, seq_len - 1))
    inputs = np.concatenate([tokens, np.full((num_examples, 1), vocab_size - 1)], axis=1).astype(np.int64)
    return inputs, inputs.copy()


def check(fields: dict) -> None:
    """Impossible compression settings: no room for a data token, or no data vocabulary."""
    require(fields["seq_len"] >= 2, "seq_len", fields["seq_len"], ">= 2 (data tokens + compression token)")
    require(fields["vocab_size"] >= 2, "vocab_size", fields["vocab_size"], ">= 2 (data tokens + compression token)")
