"""Content hashes of plain data: what names a dataset in the cache and a run's configuration in its row."""

from __future__ import annotations

import hashlib
import json


def config_hash(data: object) -> str:
    """sha256 of the canonical JSON of ``data`` (stable across key order)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
