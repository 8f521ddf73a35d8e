"""Fuzzy in-context recall (MAD "fuzzy-in-context-recall", FR): recall with multi-token keys and values.

Rule (mad-lab mad/data/instances.py ``generate_fuzzy_in_context_recall_instance``; docs/mad-benchmark.md §3):
- vocabulary: pad ``vocab_size-1`` (multi_query; else copy prefix ``vocab_size-1`` and pad ``vocab_size-2``),
  ``ns = vocab_size - 1 (or 2) - noise_vocab_size``, key tokens ``[0, ns//2)``, value tokens ``[ns//2, ns)``;
- a key of size s is an ordered s-tuple of distinct key tokens, uniform over all of them; values likewise. Key sizes
  are uniform in ``1..k_motif_size`` for training and always ``k_motif_size`` for test; value sizes uniform in
  ``1..v_motif_size``;
- a probe (key, value) of such sizes and a position ``probe_idx`` uniform in ``[0, seq_len - 2*(|kp|+|vp|))``;
- while the length is below ``seq_len - (|kp|+|vp|) - (k_motif_size+v_motif_size)``: draw a key size and a value
  size; if the length has reached ``probe_idx`` and the probe is not placed, emit the probe (targets -100);
  else with probability ``frac_noise`` emit ``ksize+vsize`` noise tokens; else a key: the probe key takes the probe
  value and counts as placing the probe, a key seen before keeps its first value (and its length), a new key takes a
  new value of the drawn size. Value targets are the value when the key was presented before (multi_query);
- then (copy prefix,) the probe key and value (targets on the value), left-padded with pad to ``seq_len + 1``;
- train: ``inputs = raw[:-1]``, ``targets = raw[1:]``; test: ``targets = raw_targets[1:]``.

MAD materialises and shuffles every permutation list for every row (6–22 s a row at vocab 128 on a 2-core
machine, measured). A uniform pick from a shuffled list is a uniform pick, so this version draws permutation
*indices* and decodes only the drawn ones; all rows advance through the loop together, and the draws of each loop
step are made up front (unused ones are discarded; each step's draws are independent of the past, so the law is
MAD's). Equal in law, not byte-equal, to MAD's arrays.
"""

from __future__ import annotations

from math import perm

import numpy as np

from deltanet.tasks.generator_kit import IGNORE, in_chunks, require, shift

PAIR, NOISE, PROBE = 1, 2, 3  # what a loop step emitted


def generate(
    num_examples: int,
    *,
    rng: np.random.Generator,
    is_training: bool,
    vocab_size: int = 16,
    seq_len: int = 128,
    k_motif_size: int = 3,
    v_motif_size: int = 3,
    multi_query: bool = True,
    noise_vocab_size: int = 0,
    frac_noise: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``num_examples`` rows of fuzzy recall: ``(inputs, targets)``, each ``[num_examples, seq_len]``."""
    check(dict(vocab_size=vocab_size, seq_len=seq_len, k_motif_size=k_motif_size, v_motif_size=v_motif_size,
               multi_query=multi_query, noise_vocab_size=noise_vocab_size, frac_noise=frac_noise))
    ns = vocab_size - (1 if multi_query else 2) - noise_vocab_size
    keys = Motifs(0, ns // 2, k_motif_size)
    values = Motifs(ns // 2, ns, v_motif_size)
    pad = vocab_size - 1 if multi_query else vocab_size - 2

    def make(rows: int) -> tuple[np.ndarray, np.ndarray]:
        raw, raw_targets = _raw_rows(rows, rng, is_training, seq_len, keys, values, multi_query, pad,
                                     vocab_size - 1, ns, noise_vocab_size, frac_noise)
        return shift(raw, raw_targets, is_training)

    return in_chunks(num_examples, seq_len, make)


class Motifs:
    """All ordered tuples of distinct tokens from ``[low, high)`` of sizes ``1..max_size``, as integer ids:
    id = offset[size] + index of the tuple in ``itertools.permutations`` order."""

    def __init__(self, low: int, high: int, max_size: int):
        self.low, self.count, self.max_size = low, high - low, max_size
        self.per_size = np.array([0] + [perm(self.count, s) for s in range(1, max_size + 1)], dtype=np.int64)
        self.offset = np.concatenate([[0], np.cumsum(self.per_size[1:])])  # offset[s-1] = first id of size s

    def draw(self, rng: np.random.Generator, sizes: np.ndarray) -> np.ndarray:
        return self.offset[sizes - 1] + rng.integers(0, self.per_size[sizes])

    def size_of(self, ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.offset, ids, side="right")

    def tokens(self, ids: np.ndarray) -> np.ndarray:
        """``[len(ids), max_size]`` tokens of each tuple, left-aligned (entries past a tuple's size are junk)."""
        sizes = self.size_of(ids)
        out = np.zeros((len(ids), self.max_size), dtype=np.int64)
        for size in range(1, self.max_size + 1):
            mask = sizes == size
            out[mask, :size] = decode_permutation(ids[mask] - self.offset[size - 1], self.count, size) + self.low
        return out


def decode_permutation(index: np.ndarray, n: int, size: int) -> np.ndarray:
    """The ``index``-th ``size``-tuple of ``itertools.permutations(range(n), size)``, vectorised: digit i picks the
    digit-th smallest token not yet chosen."""
    out = np.empty((len(index), size), dtype=np.int64)
    rest = np.asarray(index, dtype=np.int64)
    for i in range(size):
        block = perm(n - 1 - i, size - 1 - i)
        token = rest // block
        rest = rest % block
        for chosen in np.sort(out[:, :i], axis=1).T:
            token = token + (token >= chosen)
        out[:, i] = token
    return out


def _raw_rows(rows, rng, is_training, seq_len, keys, values, multi_query, pad, copy_prefix, ns, noise_vocab_size,
              frac_noise):
    row = np.arange(rows)
    kmax, vmax = keys.max_size, values.max_size

    def key_sizes(shape):
        return rng.integers(1, kmax + 1, shape) if is_training else np.full(shape, kmax)

    probe_ksize, probe_vsize = key_sizes(rows), rng.integers(1, vmax + 1, rows)
    probe_key, probe_value = keys.draw(rng, probe_ksize), values.draw(rng, probe_vsize)
    probe_len = probe_ksize + probe_vsize
    probe_idx = rng.integers(0, seq_len - 2 * probe_len)
    stop = seq_len - probe_len - (kmax + vmax)
    steps = max(0, int(stop.max()) + 1) // 2  # every step emits >= 2 tokens

    ksize, vsize = key_sizes((rows, steps)), rng.integers(1, vmax + 1, (rows, steps))
    noise = rng.random((rows, steps)) < frac_noise if frac_noise > 0 else np.zeros((rows, steps), dtype=bool)
    key = keys.draw(rng, ksize)
    new_value = values.draw(rng, vsize)
    previous = _previous_occurrence(np.where(noise, -1, key))

    kind = np.zeros((rows, steps), dtype=np.int8)
    start = np.zeros((rows, steps), dtype=np.int64)
    value = np.full((rows, steps), -1, dtype=np.int64)
    scored = np.zeros((rows, steps), dtype=bool)
    length = np.zeros(rows, dtype=np.int64)
    probe_placed = np.zeros(rows, dtype=bool)
    probe_step = np.full(rows, -1)  # the step that emitted the probe; its own key draw was never used
    for t in range(steps):
        active = length < stop
        start[:, t] = length
        insert = active & ~probe_placed & (length >= probe_idx)
        kind[insert, t], probe_step[insert] = PROBE, t
        probe_placed |= insert
        length += np.where(insert, probe_len, 0)

        is_noise = active & ~insert & noise[:, t]
        kind[is_noise, t] = NOISE
        length += np.where(is_noise, ksize[:, t] + vsize[:, t], 0)

        pair = active & ~insert & ~noise[:, t]
        earlier = previous[:, t]
        skip = (earlier >= 0) & (earlier == probe_step)
        earlier = np.where(skip, previous[row, np.maximum(earlier, 0)], earlier)
        is_probe_key = key[:, t] == probe_key
        seen = earlier >= 0
        chosen = np.where(is_probe_key, probe_value,
                          np.where(seen, value[row, np.maximum(earlier, 0)], new_value[:, t]))
        presented = seen | (is_probe_key & (probe_step >= 0))
        kind[pair, t] = PAIR
        value[pair, t] = chosen[pair]
        scored[:, t] = pair & presented & multi_query
        probe_placed |= pair & is_probe_key
        length += np.where(pair, ksize[:, t] + values.size_of(chosen), 0)

    total = length + probe_len + (0 if multi_query else 1)
    left_pad = seq_len + 1 - total
    raw = np.full((rows, seq_len + 1), pad, dtype=np.int64)
    raw_targets = np.full((rows, seq_len + 1), IGNORE, dtype=np.int64)

    def put(r, at, tokens, lengths, targets):
        """Write each piece's first ``lengths`` tokens at ``at`` (and ``targets``, or -100 where it is None)."""
        for j in range(tokens.shape[1]):
            m = j < lengths
            raw[r[m], at[m] + j] = tokens[m, j]
            raw_targets[r[m], at[m] + j] = IGNORE if targets is None else targets[m, j]

    r, t = np.nonzero(kind == PAIR)
    at = left_pad[r] + start[r, t]
    value_tokens = values.tokens(value[r, t])
    put(r, at, keys.tokens(key[r, t]), ksize[r, t], None)
    put(r, at + ksize[r, t], value_tokens, values.size_of(value[r, t]),
        np.where(scored[r, t][:, None], value_tokens, IGNORE))
    r, t = np.nonzero(kind == NOISE)
    noise_tokens = rng.integers(ns, ns + noise_vocab_size, (len(r), kmax + vmax)) if len(r) else None
    if len(r):
        put(r, left_pad[r] + start[r, t], noise_tokens, ksize[r, t] + vsize[r, t], None)
    r, t = np.nonzero(kind == PROBE)
    _put_probe(put, r, left_pad[r] + start[r, t], keys, values, probe_key[r], probe_value[r], scored_value=False)
    at = left_pad + length
    if not multi_query:
        raw[row, at] = copy_prefix
        at = at + 1
    _put_probe(put, row, at, keys, values, probe_key, probe_value, scored_value=True)
    return raw, raw_targets


def _put_probe(put, r, at, keys, values, probe_key, probe_value, scored_value):
    key_tokens, key_sizes = keys.tokens(probe_key), keys.size_of(probe_key)
    value_tokens = values.tokens(probe_value)
    put(r, at, key_tokens, key_sizes, None)
    put(r, at + key_sizes, value_tokens, values.size_of(probe_value), value_tokens if scored_value else None)


def _previous_occurrence(ids: np.ndarray) -> np.ndarray:
    """For each step, the latest earlier step of the same row with the same id (ids < 0 never match), else -1.
    The flat order is (row, step), so a stable sort by (row, id) keeps each id's steps in order."""
    rows, steps = ids.shape
    flat = ids.ravel()
    order = np.argsort(np.repeat(np.arange(rows), steps) * (int(flat.max(initial=0)) + 2) + flat + 1, kind="stable")
    sorted_ids, sorted_rows = flat[order], order // max(steps, 1)
    same = (sorted_ids[1:] == sorted_ids[:-1]) & (sorted_rows[1:] == sorted_rows[:-1]) & (sorted_ids[1:] >= 0)
    previous = np.full(rows * steps, -1, dtype=np.int64)
    previous[order[1:][same]] = order[:-1][same] % max(steps, 1)
    return previous.reshape(rows, steps)


def check(fields: dict) -> None:
    """Impossible fuzzy-recall settings: too few key/value tokens for the motif sizes, too short a sequence."""
    kmax, vmax, noise = fields["k_motif_size"], fields["v_motif_size"], fields["noise_vocab_size"]
    require(kmax >= 1, "k_motif_size", kmax, ">= 1")
    require(vmax >= 1, "v_motif_size", vmax, ">= 1")
    require(noise >= 0, "noise_vocab_size", noise, "an integer >= 0")
    require(0 <= fields["frac_noise"] < 1, "frac_noise", fields["frac_noise"], "0 <= frac_noise < 1")
    require(fields["frac_noise"] == 0 or noise > 0, "noise_vocab_size", noise, "> 0 when frac_noise > 0")
    special = 1 if fields["multi_query"] else 2
    ns = fields["vocab_size"] - special - noise
    need = special + noise + max(2 * kmax, 2 * vmax - 1)  # ns//2 >= kmax and ns - ns//2 >= vmax
    require(ns // 2 >= kmax and ns - ns // 2 >= vmax, "vocab_size", fields["vocab_size"],
            f">= {need} ({special} special + {noise} noise tokens, >= k_motif_size={kmax} key tokens and "
            f">= v_motif_size={vmax} value tokens)")
    require(fields["seq_len"] > 2 * (kmax + vmax), "seq_len", fields["seq_len"],
            f"> 2*(k_motif_size+v_motif_size) = {2 * (kmax + vmax)}")
