"""One measured row per stdout line, so a caller that reads a benchmark's output keeps every row measured so far.

    from rows import emit            # benchmarks/ is on sys.path when a benchmark runs as a script
    emit(model="delta_net_4layer", tokens_per_second=902771.0)

``emit(**row)`` prints ``ROW <json>`` (one line, flushed) to stdout; ``parse(line)`` gives the row back, or None for
any other line. ``benchmarks/gpu_check.py`` reads its parts' stdout this way and rewrites its summary after each row,
so a part killed at its time limit keeps the rows it printed. Values must be JSON-serialisable (NaN is allowed).
"""

from __future__ import annotations

import json
import sys

PREFIX = "ROW "


def emit(**row) -> None:
    """Print ``row`` as one ``ROW <json>`` line on stdout and flush it."""
    print(PREFIX + json.dumps(row), file=sys.stdout, flush=True)


def parse(line: str) -> dict | None:
    """The row of a ``ROW <json>`` line, or None for any other line (or a row cut off mid-line)."""
    if not line.startswith(PREFIX):
        return None
    try:
        row = json.loads(line[len(PREFIX):])
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) else None
