"""Run summary and provenance, read from the run rows (never from the machine rendering the report)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd


def _values(runs: pd.DataFrame, column: str) -> str:
    if column not in runs or runs.empty:
        return "not recorded"
    values = sorted({str(v) for v in runs[column].dropna() if str(v) != ""})
    return ", ".join(values) if values else "not recorded"


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "not recorded"
    h, rem = divmod(int(round(seconds)), 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m {s:02d}s ({seconds:,.1f} s summed over runs)"


def _dates(runs: pd.DataFrame) -> str:
    stamps = pd.to_datetime(runs["finished_at"], utc=True, errors="coerce").dropna() if len(runs) else []
    if not len(stamps):
        return "not recorded"
    return f"{stamps.min():%Y-%m-%d %H:%M} – {stamps.max():%Y-%m-%d %H:%M} UTC (runs finished)"


def summary(runs: pd.DataFrame, scale: str, files: list[Path]) -> pd.DataFrame:
    """Two-column table (item, value) describing where the numbers come from."""
    if runs.empty:
        commits = "not recorded"
    else:
        commits = ", ".join(
            f"{c}{' (dirty)' if bool(runs.loc[runs['git_commit'] == c, 'git_dirty'].any()) else ''}"
            for c in sorted(set(runs["git_commit"].astype(str)))
        )
    n = len(runs)
    rows = [
        ("scale", scale),
        ("scales in run rows", _values(runs, "scale")),
        ("fidelity profile (docs/fidelity.md)", _values(runs, "profile")),
        ("git commit(s)", commits),
        ("devices", _values(runs, "device")),
        ("torch", _values(runs, "torch_version")),
        ("triton", _values(runs, "triton_version")),
        ("python", _values(runs, "python_version")),
        ("lock file", _values(runs, "lock_file")),
        ("lock sha256", _values(runs, "lock_sha256")),
        ("image sha256 (--use-singularity)", _values(runs, "image_sha256")),
        ("date", _dates(runs)),
        ("total wall time", _duration(float(runs["wall_seconds"].sum()) if n else math.nan)),
        ("run files", str(len(files))),
        ("runs", str(n)),
        ("variants", str(runs["variant"].nunique()) if n else "0"),
        ("seeds", _values(runs, "seed")),
        ("diverged runs", str(int((runs["stop_reason"] == "diverged").sum())) if n else "0"),
        ("runs with NaN test accuracy (dropped)", str(int(runs["test_acc"].isna().sum())) if n else "0"),
    ]
    return pd.DataFrame(rows, columns=["item", "value"])
