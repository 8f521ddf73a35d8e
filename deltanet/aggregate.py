"""Aggregate run parquet files into MAD scores: the accuracies table (``deltanet aggregate``).

MAD-lab's rule (``mad/analysis.py``, ``docs/mad-benchmark.md`` §7 "Score aggregation"):

1. drop runs whose test accuracy is NaN (pandas ``dropna``; we count them);
2. per (variant, task, setting, seed) keep the run with the **max test_acc** over the lr × weight-decay sweep;
3. task score = **unweighted mean over the task's settings** of those best accuracies;
4. average = **unweighted mean over the tasks** of the grid (the six MAD tasks by default).

With several seeds, steps 2–3 run per seed; the cell's score is the mean over seeds and its 95% confidence interval
is ``mean ± t(0.975, n−1) · sd / sqrt(n)`` (Student t from a small table, normal 1.96 beyond 30 degrees of
freedom); with one seed the interval is undefined (NaN). Diverged runs count with their measured accuracy.

A cell of the grid (variant × task) without runs is **missing**: NaN in the tables, an empty CSV cell, never zero;
its variant's average is missing too. A cell whose runs all have a NaN accuracy (they diverged in their first
epoch) has no score either, but it is not missing: ``cell_notes`` says so, and the Markdown table shows it.

Longer than 300 lines on purpose: the score rule, the table shapes and the command that writes them read as one.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from tabulate import tabulate

from deltanet.io import atomic_path, write_text_atomic
from deltanet.runs import RUN_COLUMNS, RunFileError, read_runs
from deltanet.tasks import DISPLAY_NAMES, TASK_IDS

REFERENCE_CSV = Path(__file__).parent / "data" / "reported_accuracies.csv"
SCORE_COLUMNS = [DISPLAY_NAMES[t] for t in TASK_IDS]  # the reference table's column order
WIDE_COLUMNS = ["variant", *SCORE_COLUMNS, "Average"]
LONG_COLUMNS = [
    "variant", "task", "display_name", "score", "n_settings", "n_seeds", "ci_low", "ci_high",
    "n_runs", "n_diverged", "n_nan",
]  # fmt: skip

# two-sided 95% Student t quantiles t(0.975, df) for df = 1..30; beyond 30 the normal 1.96 is used
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t975(df: int) -> float:
    """Two-sided 95% Student t quantile for ``df`` degrees of freedom (normal approximation beyond 30)."""
    if df < 1:
        return math.nan
    return _T975[df - 1] if df <= len(_T975) else 1.96


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95% t confidence interval of ``values``; the interval is NaN for fewer than two values."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = t975(len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return mean, mean - half, mean + half


# ---------------------------------------------------------------------------------------------- reading runs
def run_path(runs_dir: str | Path, variant: str, task: str) -> Path:
    return Path(runs_dir) / variant / f"{task}.parquet"


def discover_run_files(runs_dir: str | Path) -> list[Path]:
    """Every ``<variant>/<task>.parquet`` under ``runs_dir`` (sorted)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise RunFileError(f"{runs_dir}: runs directory does not exist")
    return sorted(p for p in runs_dir.glob("*/*.parquet") if p.is_file())


def read_run_files(paths: Iterable[str | Path], check_names: bool = True) -> pd.DataFrame:
    """Read and validate run files into one table.

    With ``check_names`` a file ``<variant>/<task>.parquet`` must hold only rows of that variant and task
    (a misplaced file is a :class:`RunFileError` naming it).
    """
    frames = []
    for path in paths:
        path = Path(path)
        try:
            df = read_runs(path)
        except RunFileError as err:  # a corrupt or truncated file: say how to get it back
            raise RunFileError(f"{err}; rebuild it with: rm -f {path} && snakemake --cores all") from err
        if check_names and len(df):
            variants, tasks = set(df["variant"]), set(df["task"])
            if variants != {path.parent.name} or tasks != {path.stem}:
                raise RunFileError(
                    f"{path}: holds variant(s) {sorted(variants)} / task(s) {sorted(tasks)}, "
                    f"expected {path.parent.name!r} / {path.stem!r} from its path"
                )
        frames.append(df)
    if not frames:
        dtypes = {"i": "int64", "f": "float64", "b": "bool", "O": "object"}
        return pd.DataFrame({c: pd.Series(dtype=dtypes[k]) for c, k in RUN_COLUMNS.items()})
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------------------------- scoring
def best_over_sweep(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (variant, task, setting, seed) the run with max test_acc over the lr × wd sweep (NaN runs dropped)."""
    valid = runs.dropna(subset=["test_acc"])
    if valid.empty:
        return valid
    idx = valid.groupby(["variant", "task", "setting_id", "seed"], sort=True)["test_acc"].idxmax()
    return valid.loc[idx.to_numpy()].reset_index(drop=True)


def score_runs(
    runs: pd.DataFrame, variants: Sequence[str] | None = None, tasks: Sequence[str] | None = None
) -> pd.DataFrame:
    """The long accuracies table: one row per cell of the grid ``variants × tasks`` (``LONG_COLUMNS``).

    ``variants`` defaults to those in ``runs``, ``tasks`` to the six MAD tasks. Cells without runs are kept with a
    NaN score and zero counts.
    """
    variants = sorted(set(runs["variant"])) if variants is None else list(variants)
    tasks = list(TASK_IDS) if tasks is None else list(tasks)
    best = best_over_sweep(runs)
    rows = []
    for variant in variants:
        for task in tasks:
            cell_runs = runs[(runs["variant"] == variant) & (runs["task"] == task)]
            cell_best = best[(best["variant"] == variant) & (best["task"] == task)] if len(best) else best
            if len(cell_best):
                per_seed = cell_best.groupby("seed")["test_acc"].mean()  # mean over settings, per seed
                score, ci_low, ci_high = mean_ci(per_seed.to_numpy())
                n_settings, n_seeds = cell_best["setting_id"].nunique(), len(per_seed)
            else:
                score = ci_low = ci_high = math.nan
                n_settings = n_seeds = 0
            rows.append({
                "variant": variant, "task": task, "display_name": DISPLAY_NAMES.get(task, task),
                "score": score, "n_settings": n_settings, "n_seeds": n_seeds,
                "ci_low": ci_low, "ci_high": ci_high, "n_runs": len(cell_runs),
                "n_diverged": int((cell_runs["stop_reason"] == "diverged").sum()) if len(cell_runs) else 0,
                "n_nan": int(cell_runs["test_acc"].isna().sum()) if len(cell_runs) else 0,
            })  # fmt: skip
    long = pd.DataFrame(rows, columns=LONG_COLUMNS)
    for col in ("score", "ci_low", "ci_high"):
        long[col] = long[col].astype(float)
    for col in ("n_settings", "n_seeds", "n_runs", "n_diverged", "n_nan"):
        long[col] = long[col].astype("int64")
    return long


def cell_notes(long: pd.DataFrame) -> dict[tuple[str, str], str]:
    """What a cell's score alone would hide, keyed by ``(variant, display_name)``.

    A cell with runs but no score: ``diverged (k/n runs)`` when k of its n runs diverged, else
    ``no finite score (n runs)``. A scored cell with diverged runs: ``(k/n runs diverged)``, shown after the score.
    Missing cells (no runs) and scored cells without diverged runs have no note.
    """
    notes = {}
    for r in long.itertuples(index=False):
        if r.n_runs == 0:
            continue
        if math.isnan(r.score):
            runs = f"{r.n_diverged}/{r.n_runs} runs" if r.n_diverged else f"{r.n_runs} runs"
            notes[(r.variant, r.display_name)] = f"diverged ({runs})" if r.n_diverged else f"no finite score ({runs})"
        elif r.n_diverged:
            notes[(r.variant, r.display_name)] = f"({r.n_diverged}/{r.n_runs} runs diverged)"
    return notes


def wide_table(long: pd.DataFrame) -> pd.DataFrame:
    """The reference table's shape: ``variant``, the six task columns in reference order, ``Average``.

    Tasks outside the grid are all-NaN columns. ``Average`` is the mean over the grid's tasks and NaN when any of
    them is missing for that variant.
    """
    if long.empty:
        return pd.DataFrame({c: pd.Series(dtype=object if c == "variant" else float) for c in WIDE_COLUMNS})
    grid_tasks = [DISPLAY_NAMES.get(t, t) for t in dict.fromkeys(long["task"])]
    table = long.pivot(index="variant", columns="display_name", values="score")
    table = table.reindex(columns=SCORE_COLUMNS)
    table["Average"] = table[grid_tasks].mean(axis=1, skipna=False) if grid_tasks else math.nan
    table = table.reindex(sorted(table.index)).reset_index()
    table.columns.name = None
    return table[WIDE_COLUMNS]


def load_reference(path: str | Path = REFERENCE_CSV) -> pd.DataFrame:
    """The reported table shipped in ``deltanet/data`` with an ``Average`` column added (mean of the six tasks)."""
    ref = pd.read_csv(path)
    if list(ref.columns) != ["variant", *SCORE_COLUMNS]:
        raise ValueError(f"{path}: columns {list(ref.columns)}, expected {['variant', *SCORE_COLUMNS]}")
    ref["Average"] = ref[SCORE_COLUMNS].mean(axis=1)
    return ref


# ---------------------------------------------------------------------------------------------- writing
def to_csv_text(wide: pd.DataFrame) -> str:
    """CSV with six decimals and empty missing cells (the reference file's format)."""
    return wide.to_csv(index=False, float_format="%.6f", na_rep="", lineterminator="\n")


def to_markdown(wide: pd.DataFrame, notes: dict[tuple[str, str], str] | None = None, floatfmt: str = ".4f") -> str:
    """GitHub-format table; missing cells show as an em dash, cells with a ``cell_notes`` note show it."""
    notes = notes or {}
    rows = []
    for row in wide.itertuples(index=False):
        cells = [row[0]]
        for col, v in zip(wide.columns[1:], row[1:]):
            text = "—" if math.isnan(v) else format(v, floatfmt)
            note = notes.get((row[0], col))
            cells.append(text if note is None else (note if math.isnan(v) else f"{text} {note}"))
        rows.append(cells)
    colalign = ["left"] + ["right"] * (len(wide.columns) - 1)
    return tabulate(rows, headers=list(wide.columns), tablefmt="github", colalign=colalign, disable_numparse=True)


def write_outputs(long: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """Write ``accuracies.csv``, ``accuracies.parquet`` and ``accuracies.md`` atomically into ``out_dir``."""
    out_dir = Path(out_dir)
    wide = wide_table(long)
    paths = {name: out_dir / f"accuracies.{name}" for name in ("csv", "parquet", "md")}
    write_text_atomic(paths["csv"], to_csv_text(wide))
    with atomic_path(paths["parquet"]) as tmp:
        long.to_parquet(tmp, index=False)
    write_text_atomic(paths["md"], to_markdown(wide, cell_notes(long)) + "\n")
    return paths


def aggregate_dir(
    runs_dir: str | Path,
    variants: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    scale: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a scale's run directory and score it; returns ``(runs, long)``.

    With ``variants`` or ``tasks`` given, the grid is explicit and every file of it must exist; otherwise the grid
    is what is on disk (variant folders × the six tasks, absent files shown as missing cells).
    """
    if variants is None and tasks is None:
        paths = discover_run_files(runs_dir)
        if not paths:
            raise RunFileError(f"{runs_dir}: no run files (<variant>/<task>.parquet)")
        grid_variants = sorted({p.parent.name for p in paths})
        grid_tasks = list(TASK_IDS)
    else:
        if variants is None:
            grid_variants = sorted({p.parent.name for p in discover_run_files(runs_dir)})
        else:
            grid_variants = list(variants)
        grid_tasks = list(TASK_IDS) if tasks is None else list(tasks)
        paths = [run_path(runs_dir, v, t) for v in grid_variants for t in grid_tasks]
    runs = read_run_files(paths)
    check_scale(runs, scale)
    return runs, score_runs(runs, grid_variants, grid_tasks)


def check_scale(runs: pd.DataFrame, scale: str | None) -> None:
    if scale is None or runs.empty:
        return
    other = runs.loc[runs["scale"] != scale, "scale"]
    if len(other):
        raise RunFileError(f"runs of scale {sorted(set(other))} found where scale {scale!r} was expected")


def _split(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deltanet aggregate", description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--runs-dir", help="results/<scale>/runs (reads <variant>/<task>.parquet)")
    src.add_argument("--runs", nargs="+", metavar="FILE", help="explicit run parquet files")
    p.add_argument("--out-dir", required=True, help="where accuracies.{csv,parquet,md} are written")
    p.add_argument("--scale", help="expected scale of every run row")
    p.add_argument("--variants", help="comma-separated expected variants (grid rows)")
    p.add_argument("--tasks", help="comma-separated expected task ids (grid columns)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    variants, tasks = _split(args.variants), _split(args.tasks)
    try:
        if args.runs_dir:
            _, long = aggregate_dir(args.runs_dir, variants, tasks, args.scale)
        else:
            runs = read_run_files(args.runs)
            check_scale(runs, args.scale)
            long = score_runs(runs, variants or sorted(set(runs["variant"])), tasks)
    except RunFileError as err:
        print(f"deltanet aggregate: error: {err}", file=sys.stderr)
        return 1
    paths = write_outputs(long, args.out_dir)
    print(f"aggregated {int(long['n_runs'].sum())} runs into {len(long)} cells -> {paths['csv']}")
    missing = long[long["n_runs"] == 0]
    if len(missing):
        print(f"missing cells ({len(missing)}): " + ", ".join(f"{r.variant}/{r.task}" for r in missing.itertuples()))
    diverged = long[long["n_diverged"] > 0]
    if len(diverged):
        print(f"diverged cells ({len(diverged)}): " + ", ".join(
            f"{r.variant}/{r.task} ({r.n_diverged}/{r.n_runs} runs diverged)" for r in diverged.itertuples()))
    unscored = long[long["score"].isna() & (long["n_runs"] > 0) & (long["n_diverged"] == 0)]
    if len(unscored):
        print(f"cells without a finite accuracy ({len(unscored)}): "
              + ", ".join(f"{r.variant}/{r.task}" for r in unscored.itertuples()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
