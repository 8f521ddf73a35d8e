"""The run table: one parquet row per training run, written by ``deltanet train``, read by ``deltanet.aggregate``.

Versioned: ``SCHEMA_VERSION`` is stored in every row and checked on read. Besides the fixed ``RUN_COLUMNS``, a
file holds one column per setting field of its task (names listed in ``setting_json``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

SCHEMA_VERSION = 5  # v2: finished_at (ISO 8601, UTC); v3: lock_file, lock_sha256, image_sha256, profile;
# v4: group_size (runs trained together as one fused group), captured (steps replayed from CUDA graphs);
# v5: shared_code_sha256 (the code every train job runs besides its variant and task: deltanet/import_graph.py)
EARLY_STOPPED, MAX_EPOCHS, DIVERGED = STOP_REASONS = ("early_stopped", "max_epochs", "diverged")
# what one evaluation pass measures (deltanet/metrics.py); a row has each as test_<name> and train_<name>
METRIC_NAMES = ("acc", "acc_micro", "ppl", "loss")

# column -> pandas dtype kind ("i" int, "f" float, "b" bool, "O" string)
RUN_COLUMNS: dict[str, str] = {
    "schema_version": "i",
    "variant": "O", "mixer": "O", "task": "O", "scale": "O",
    "setting_id": "O", "setting_json": "O",
    "lr": "f", "weight_decay": "f", "seed": "i",
    **{f"{split}_{name}": "f" for split in ("test", "train") for name in METRIC_NAMES},
    "best_epoch": "i", "epochs_run": "i", "stop_reason": "O",
    "wall_seconds": "f", "tokens_per_second": "f", "peak_memory_mb": "f", "finished_at": "O",
    "device": "O", "torch_version": "O", "triton_version": "O", "python_version": "O",
    "lock_file": "O", "lock_sha256": "O", "image_sha256": "O",
    "git_commit": "O", "git_dirty": "b", "variant_source_sha256": "O", "shared_code_sha256": "O",
    "config_sha256": "O", "profile": "O",
    "num_parameters": "i", "group_size": "i", "captured": "b",
}  # fmt: skip


class RunFileError(ValueError):
    """A run parquet is missing, unreadable, or does not match the schema; the message names the file."""


def validate_runs(df: pd.DataFrame, source: str) -> None:
    missing = [c for c in RUN_COLUMNS if c not in df.columns]
    if missing:
        raise RunFileError(f"{source}: missing columns {missing} (run schema v{SCHEMA_VERSION})")
    versions = set(df["schema_version"].unique())
    if versions - {SCHEMA_VERSION}:
        raise RunFileError(f"{source}: schema_version {sorted(versions)}, this code reads v{SCHEMA_VERSION}")
    for column, kind in RUN_COLUMNS.items():
        actual = df[column].dtype.kind
        ok = actual == kind or (kind == "f" and actual in "iu") or (kind == "O" and actual in "OUT")
        if not ok and len(df):
            raise RunFileError(f"{source}: column {column!r} has dtype {df[column].dtype}, expected kind {kind!r}")
    bad = set(df["stop_reason"]) - set(STOP_REASONS)
    if bad:
        raise RunFileError(f"{source}: unknown stop_reason {sorted(bad)}; allowed: {STOP_REASONS}")


def read_runs(path: str | Path) -> pd.DataFrame:
    """Read and validate one run parquet; any problem raises :class:`RunFileError` naming ``path``."""
    path = Path(path)
    if not path.is_file():
        raise RunFileError(f"{path}: run file does not exist")
    try:
        df = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise RunFileError(f"{path}: not a readable parquet file ({type(err).__name__}: {err})") from err
    validate_runs(df, str(path))
    return df
