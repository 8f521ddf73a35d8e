"""Noisy in-context recall (MAD "noisy-in-context-recall", NR): in-context recall with noise slots.

Rule (mad-lab mad/data/instances.py ``generate_noisy_in_context_recall_instance``; docs/mad-benchmark.md §2):
exactly the in-context recall generator with ``noise_vocab_size`` and ``frac_noise`` set. A noise slot is two
uniform tokens from ``[ns, ns + noise_vocab_size)`` in place of a key-value pair; its targets are -100 at test time,
and predicted like every token at training time (full next-token shift). Baseline vocab 32 = 8 keys + 8 values + 16
noise tokens.
"""

from __future__ import annotations

import numpy as np

from deltanet.tasks import context_recall

check = context_recall.check


def generate(
    num_examples: int,
    *,
    rng: np.random.Generator,
    is_training: bool,
    vocab_size: int = 32,
    seq_len: int = 128,
    multi_query: bool = True,
    noise_vocab_size: int = 16,
    frac_noise: float = 0.2,
) -> tuple[np.ndarray, np.ndarray]:
    """``num_examples`` rows of noisy in-context recall (see ``context_recall.generate``)."""
    return context_recall.generate(
        num_examples, rng=rng, is_training=is_training, vocab_size=vocab_size, seq_len=seq_len,
        multi_query=multi_query, noise_vocab_size=noise_vocab_size, frac_noise=frac_noise,
    )
