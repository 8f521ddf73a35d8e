"""Read the hash-checked lock files in ``requirements/`` (written by ``requirements/lock.py``).

A lock holds one ``name==version`` line per package, each followed by ``--hash=sha256:...`` continuation lines,
and a header naming the Python version and platform it was resolved for.
"""

from __future__ import annotations

import re
from typing import NamedTuple

HEADER = "# Resolved for Python {python} on {platform}, with the sha256 of every file pip may install."
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")
_TARGET = re.compile(r"^# Resolved for Python (\d+\.\d+) on (\S+),", re.MULTILINE)


class Pin(NamedTuple):
    version: str
    hashes: frozenset[str]


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(text: str) -> dict[str, Pin]:
    """Package (normalised name) -> its pinned version and allowed hashes."""
    pins: dict[str, Pin] = {}
    name = None
    for line in text.splitlines():
        if match := _PIN.match(line):
            name = normalize(match.group(1))
            pins[name] = Pin(match.group(2), frozenset())
        elif name and (match := _HASH.search(line)):
            pins[name] = Pin(pins[name].version, pins[name].hashes | {match.group(1)})
        elif not line.startswith(" "):
            name = None
    return pins


def target(text: str) -> tuple[str, str]:
    """(Python minor version, platform) from the header; ValueError when the header is missing."""
    match = _TARGET.search(text)
    if match is None:
        raise ValueError(f"lock file has no line like {HEADER!r}")
    return match.group(1), match.group(2)
