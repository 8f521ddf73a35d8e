"""The one answer to a name that is not registered: the closest registered name, and where the full list is."""

from __future__ import annotations

import difflib
from collections.abc import Sequence


def unknown_name(kind: str, name: object, known: Sequence[str], listed_by: str | None = None) -> str:
    """``unknown <kind> 'x'; did you mean 'y'? (<listed_by> lists all N)``: one line, the hint only if one is close.

    Without ``listed_by`` (a short list that no command prints, e.g. a config's scales) the names themselves close it.
    """
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    where = f"{listed_by} lists all {len(known)}" if listed_by else f"allowed: {', '.join(known)}"
    return f"unknown {kind} {name!r}{hint} ({where})"
