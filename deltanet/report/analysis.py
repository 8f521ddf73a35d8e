"""Numbers behind the report sections: leaderboard, best per task, deltas, wins over the gated baseline, collapse.

All functions take the wide accuracies table (``deltanet.aggregate.wide_table``: ``variant``, the six task
display names, ``Average``) and return DataFrames; missing cells stay NaN throughout.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from deltanet.aggregate import SCORE_COLUMNS
from deltanet.tasks import DISPLAY_NAMES, TASK_IDS

DELTA_BASELINE = "delta_net_4layer"
GATED_BASELINE = "gated_delta_net_4layer"
BASELINES = (DELTA_BASELINE, GATED_BASELINE)

# Vocabulary of each task's MAD baseline setting (../shared/spec/mad-benchmark.md §1–6): the chance-level fallback
# when the run rows carry no vocab_size.
MAD_BASELINE_VOCAB = {"compression": 16, "context_recall": 16, "fuzzy_recall": 16, "memorization": 256,
                      "noisy_recall": 32, "selective_copy": 16}  # fmt: skip
# Collapse rule: a cell is "near chance" when its score is below CHANCE_FACTOR × chance (chance = mean over the
# task's settings of 1 / vocab_size) or when its runs diverged without a finite score; a variant has collapsed when
# at least COLLAPSE_FRACTION of its judged tasks (scored or diverged) are near chance.
CHANCE_FACTOR = 3.0
COLLAPSE_FRACTION = 0.5


def task_columns(wide: pd.DataFrame) -> list[str]:
    """Task columns that hold at least one score (tasks outside the grid are all-NaN)."""
    return [c for c in SCORE_COLUMNS if c in wide and wide[c].notna().any()]


def leaderboard(wide: pd.DataFrame, tasks: list[str] | None = None) -> pd.DataFrame:
    """Variants by average (descending, missing averages last), with rank and the number of unscored grid tasks.

    ``tasks``: the grid's task display names (default: the six MAD tasks).
    """
    cols = [c for c in SCORE_COLUMNS if c in (tasks or SCORE_COLUMNS)]
    board = wide.copy()
    board["unscored tasks"] = board[cols].isna().sum(axis=1) if cols else 0
    board = board.sort_values(["Average", "variant"], ascending=[False, True], na_position="last", kind="stable")
    board.insert(0, "rank", [str(i + 1) if not math.isnan(a) else "—" for i, a in enumerate(board["Average"])])
    return board[["rank", "variant", "Average", *cols, "unscored tasks"]].reset_index(drop=True)


def best_per_task(wide: pd.DataFrame) -> pd.DataFrame:
    """Per task: the best variant, its score, the runner-up and the margin between them."""
    rows = []
    for col in SCORE_COLUMNS:
        s = wide.set_index("variant")[col].dropna().sort_values(ascending=False, kind="stable")
        if s.empty:
            rows.append({"task": col, "best variant": "—", "score": math.nan, "runner-up": "—", "margin": math.nan})
            continue
        rows.append({
            "task": col, "best variant": s.index[0], "score": s.iloc[0],
            "runner-up": s.index[1] if len(s) > 1 else "—",
            "margin": s.iloc[0] - s.iloc[1] if len(s) > 1 else math.nan,
        })  # fmt: skip
    return pd.DataFrame(rows)


def deltas(wide: pd.DataFrame, baseline: str) -> pd.DataFrame | None:
    """Every variant's score minus the baseline's, per task and on average; None when the baseline is absent."""
    w = wide.set_index("variant")
    if baseline not in w.index:
        return None
    cols = [*task_columns(wide), "Average"]
    d = w[cols] - w.loc[baseline, cols]
    return d.drop(index=baseline).reset_index()


def beats_gated(wide: pd.DataFrame) -> pd.DataFrame | None:
    """(variant, task) pairs where a variant scores above the gated baseline; None when the baseline is absent."""
    d = deltas(wide, GATED_BASELINE)
    if d is None:
        return None
    w = wide.set_index("variant")
    rows = []
    for _, r in d.iterrows():
        for col in task_columns(wide):
            if r[col] > 0:
                rows.append({"variant": r["variant"], "task": col, "score": w.loc[r["variant"], col],
                             GATED_BASELINE: w.loc[GATED_BASELINE, col], "margin": r[col]})  # fmt: skip
    return pd.DataFrame(rows, columns=["variant", "task", "score", GATED_BASELINE, "margin"])


def _vocab(row: pd.Series) -> float:
    value = row.get("vocab_size", math.nan)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        try:
            value = json.loads(row.get("setting_json") or "{}").get("vocab_size", math.nan)
        except (TypeError, ValueError):
            value = math.nan
    return float(value) if value else math.nan


def chance_levels(runs: pd.DataFrame | None) -> dict[str, float]:
    """Chance accuracy per task display name: mean over the task's settings of 1 / vocab_size.

    The vocabulary comes from the runs' ``vocab_size`` setting column (or ``setting_json``); tasks without it fall
    back to the MAD baseline setting's vocabulary (``MAD_BASELINE_VOCAB``).
    """
    levels = {DISPLAY_NAMES[t]: 1.0 / MAD_BASELINE_VOCAB[t] for t in TASK_IDS}
    if runs is None or runs.empty:
        return levels
    settings = runs.drop_duplicates(["task", "setting_id"])
    for task, part in settings.groupby("task"):
        vocab = part.apply(_vocab, axis=1).dropna()
        if task in DISPLAY_NAMES and len(vocab):
            levels[DISPLAY_NAMES[task]] = float((1.0 / vocab).mean())
    return levels


def diverged_cells(long: pd.DataFrame) -> pd.DataFrame:
    """Cells with diverged runs: variant, task (display name), diverged runs, runs, score (NaN: none finite)."""
    d = long[long["n_diverged"] > 0]
    return pd.DataFrame({"variant": d["variant"], "task": d["display_name"], "diverged runs": d["n_diverged"],
                         "runs": d["n_runs"], "score": d["score"]}).reset_index(drop=True)  # fmt: skip


def collapsed(wide: pd.DataFrame, chance: dict[str, float], diverged: pd.DataFrame | None = None) -> pd.DataFrame:
    """Variants near chance on at least ``COLLAPSE_FRACTION`` of their judged tasks.

    A task is judged when it is scored or when its runs diverged without a finite score (``diverged``, from
    ``diverged_cells``); such a task counts as near chance and is listed as ``<task> (diverged)``.
    """
    lost = set() if diverged is None else {(v, t) for v, t, s in diverged[["variant", "task", "score"]].itertuples(
        index=False) if math.isnan(s)}  # fmt: skip
    rows = []
    for _, r in wide.iterrows():
        scored = [c for c in SCORE_COLUMNS if not math.isnan(r[c])]
        gone = [c for c in SCORE_COLUMNS if (r["variant"], c) in lost]
        near = [c for c in scored if r[c] < CHANCE_FACTOR * chance[c]] + [f"{c} (diverged)" for c in gone]
        judged = len(scored) + len(gone)
        if judged and len(near) >= COLLAPSE_FRACTION * judged:
            rows.append({"variant": r["variant"], "near-chance tasks": ", ".join(near),
                         "judged tasks": judged, "Average": r["Average"]})  # fmt: skip
    return pd.DataFrame(rows, columns=["variant", "near-chance tasks", "judged tasks", "Average"])


def cell_marks(table: pd.DataFrame, notes: dict[tuple[str, str], str]) -> pd.DataFrame:
    """A marks frame for ``table`` (a ``variant`` column, task display-name columns) holding each cell's note."""
    marks = pd.DataFrame("", index=table.index, columns=table.columns)
    for i, variant in table["variant"].items():
        for col in table.columns:
            marks.at[i, col] = notes.get((variant, col), "")
    return marks


def short_name(variant: str) -> str:
    """A compact label for plots: the baseline prefix and the ``_in_for_loop`` suffix removed."""
    if variant in BASELINES:
        return variant.removesuffix("_4layer")
    return variant.removeprefix(DELTA_BASELINE + "_").removesuffix("_in_for_loop")
