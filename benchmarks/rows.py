"""One measured row per stdout line, so a caller that reads a benchmark's output keeps every row measured so far.

    from rows import emit, expect    # benchmarks/ is on sys.path when a benchmark runs as a script
    expect("model", ["delta_net_4layer", "gated_delta_net_4layer"])   # optional: what this run will measure
    emit(model="delta_net_4layer", tokens_per_second=902771.0, warmup_s=4.1, measure_s=0.9)

``emit(**row)`` prints ``ROW <json>`` (one line, flushed) to stdout; ``parse(line)`` gives the row back, or None for
any other line. ``expect(key, values)`` announces the rows to come, each identified by its ``key`` field, so a
reader can say which were not reached. ``benchmarks/gpu_check.py`` reads its parts' stdout this way and rewrites
its summary after each row, so a part killed at its time limit keeps the rows it printed; it sums the optional
``warmup_s`` (compilation, warm-up) and ``measure_s`` (timed work) fields per part. Values must be
JSON-serialisable (NaN is allowed).
"""

from __future__ import annotations

import json
import sys

PREFIX = "ROW "
EXPECT = "expect"  # the one field of an expect() row


def emit(**row) -> None:
    """Print ``row`` as one ``ROW <json>`` line on stdout and flush it."""
    print(PREFIX + json.dumps(row), file=sys.stdout, flush=True)


def expect(key: str, values) -> None:
    """Announce that this run will emit one row per value in ``values``, naming it in the row's ``key`` field."""
    emit(**{EXPECT: {"key": key, "values": list(values)}})


def parse(line: str) -> dict | None:
    """The row of a ``ROW <json>`` line, or None for any other line (or a row cut off mid-line)."""
    if not line.startswith(PREFIX):
        return None
    try:
        row = json.loads(line[len(PREFIX) :])
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) else None
