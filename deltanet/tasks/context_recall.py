"""In-context recall (MAD "in-context-recall", CR): recall the value paired with a key earlier in the sequence.

Rule (mad-lab mad/data/instances.py ``generate_in_context_recall_instance``; docs/mad-benchmark.md §1):
- vocabulary: ``ns = vocab_size - noise_vocab_size`` (one less without multi_query: token ``vocab_size-1`` is then
  the copy prefix); keys ``[0, ns//2)``, values ``[ns//2, ns)``, noise ``[ns, ns+noise_vocab_size)``;
- ``seq_len/2 - 1`` slots: each a uniform key with the value drawn (uniform) at the key's first appearance in the
  sequence, or — with probability ``frac_noise``, except one exempt slot drawn uniformly in ``[0, seq_len/2)`` —
  two uniform noise tokens;
- a final probe: (copy prefix,) a key drawn uniformly from the distinct keys shown, and its value;
- raw targets: the value of a repeated key (multi_query only) and the probe's value; all else -100;
- train: ``inputs = raw[:-1]``, ``targets = raw[1:]``; test: ``targets = raw_targets[1:]``.

MAD draws token by token in Python (0.4 ms a row at seq 128); this version draws the same distributions in array
blocks from the one seeded stream, so it is equal in law, not byte-equal, to MAD's arrays. Drawing each key's value
up front is equivalent to drawing it at first appearance (one independent uniform per key). A sequence whose every
slot is noise has no probe key (MAD raises there); such rows are redrawn.
"""

from __future__ import annotations

import numpy as np

from deltanet.tasks.generator_kit import IGNORE, in_chunks, require, shift


def generate(
    num_examples: int,
    *,
    rng: np.random.Generator,
    is_training: bool,
    vocab_size: int = 16,
    seq_len: int = 128,
    multi_query: bool = True,
    noise_vocab_size: int = 0,
    frac_noise: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``num_examples`` rows of in-context recall: ``(inputs, targets)``, each ``[num_examples, seq_len - 1]``
    (``seq_len`` without multi_query)."""
    check(dict(vocab_size=vocab_size, seq_len=seq_len, multi_query=multi_query,
               noise_vocab_size=noise_vocab_size, frac_noise=frac_noise))

    def make(rows: int) -> tuple[np.ndarray, np.ndarray]:
        raw, raw_targets, valid = _raw_rows(rows, rng, vocab_size, seq_len, multi_query, noise_vocab_size, frac_noise)
        while not valid.all():
            bad = np.flatnonzero(~valid)
            raw[bad], raw_targets[bad], valid[bad] = _raw_rows(
                len(bad), rng, vocab_size, seq_len, multi_query, noise_vocab_size, frac_noise)
        return shift(raw, raw_targets, is_training)

    return in_chunks(num_examples, seq_len, make)


def _raw_rows(rows, rng, vocab_size, seq_len, multi_query, noise_vocab_size, frac_noise):
    ns = vocab_size - noise_vocab_size - (0 if multi_query else 1)
    num_keys = ns // 2
    pairs = seq_len // 2
    slots = pairs - 1
    row_index = np.arange(rows)

    exempt = rng.integers(0, pairs, rows)
    if frac_noise > 0:
        noise = (rng.random((rows, slots)) < frac_noise) & (np.arange(slots) != exempt[:, None])
    else:
        noise = np.zeros((rows, slots), dtype=bool)
    keys = rng.integers(0, num_keys, (rows, slots))
    value_of_key = rng.integers(num_keys, ns, (rows, num_keys))
    values = np.take_along_axis(value_of_key, keys, axis=1)

    seen = np.zeros((rows, num_keys), dtype=bool)
    repeated = np.empty((rows, slots), dtype=bool)
    for s in range(slots):
        repeated[:, s] = seen[row_index, keys[:, s]]
        seen[row_index, keys[:, s]] |= ~noise[:, s]
    shown = seen.sum(axis=1)
    valid = shown > 0
    rank = rng.integers(0, np.maximum(shown, 1))
    probe_key = np.argmax(np.cumsum(seen, axis=1) > rank[:, None], axis=1)
    probe_value = value_of_key[row_index, probe_key]

    first, second = keys, values
    if frac_noise > 0:
        noise_tokens = rng.integers(ns, ns + noise_vocab_size, (rows, slots, 2))
        first = np.where(noise, noise_tokens[..., 0], keys)
        second = np.where(noise, noise_tokens[..., 1], values)
    scored = repeated & ~noise & multi_query
    body = np.stack([first, second], axis=2).reshape(rows, 2 * slots)
    body_targets = np.stack([np.full_like(keys, IGNORE), np.where(scored, values, IGNORE)], axis=2).reshape(rows, -1)

    tail = [probe_key, probe_value]
    tail_targets = [np.full(rows, IGNORE), probe_value]
    if not multi_query:
        tail.insert(0, np.full(rows, vocab_size - 1))
        tail_targets.insert(0, np.full(rows, IGNORE))
    raw = np.concatenate([body, np.stack(tail, axis=1)], axis=1)
    raw_targets = np.concatenate([body_targets, np.stack(tail_targets, axis=1)], axis=1)
    return raw.astype(np.int64), raw_targets.astype(np.int64), valid


def check(fields: dict) -> None:
    """Impossible recall settings: odd or too short seq_len, too small a vocabulary, bad noise."""
    seq_len, noise = fields["seq_len"], fields["noise_vocab_size"]
    require(seq_len % 2 == 0 and seq_len >= 4, "seq_len", seq_len, "an even number >= 4 (key-value pairs + probe)")
    require(noise >= 0, "noise_vocab_size", noise, "an integer >= 0")
    require(0 <= fields["frac_noise"] < 1, "frac_noise", fields["frac_noise"], "0 <= frac_noise < 1")
    require(fields["frac_noise"] == 0 or noise > 0, "noise_vocab_size", noise, "> 0 when frac_noise > 0")
    special = 0 if fields["multi_query"] else 1
    require(fields["vocab_size"] - noise - special >= 2, "vocab_size", fields["vocab_size"],
            f">= {noise + special + 2} (noise_vocab_size + special tokens + at least one key and one value)")
