"""Content hashes: of plain data (what names a dataset in the cache and a run's configuration in its row) and of
files (a variant's source in its row, the workflow's shared-code param, the lock and the image)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def config_hash(data: object) -> str:
    """sha256 of the canonical JSON of ``data`` (stable across key order)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in blocks (an image file is several GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
