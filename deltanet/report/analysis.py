"""Numbers behind the report sections: leaderboard, best per task, deltas, wins over the gated baseline, collapse.

All functions take the wide accuracies table (``deltanet.aggregate.wide_table``: ``variant``, the six task
display names, ``Average``) and return DataFrames; missing cells stay NaN throughout.
"""

from __future__ import annotations

import json
import math
from collections import Counter

import pandas as pd

from deltanet.aggregate import SCORE_COLUMNS
from deltanet.report.document import IDENTICAL, NOISE, SIGNIFICANT, model_label
from deltanet.tasks import DISPLAY_NAMES, TASK_IDS
from deltanet.variants.catalog import BASELINE_VARIANTS

DELTA_BASELINE, GATED_BASELINE = BASELINE_VARIANTS["delta"], BASELINE_VARIANTS["gated"]
BASELINES = (DELTA_BASELINE, GATED_BASELINE)

# Vocabulary of each task's MAD baseline setting (docs/mad-benchmark.md "Task overview"): the chance-level fallback
# when the run rows carry no vocab_size.
MAD_BASELINE_VOCAB = {"compression": 16, "context_recall": 16, "fuzzy_recall": 16, "memorization": 256,
                      "noisy_recall": 32, "selective_copy": 16}  # fmt: skip
# Collapse rule: a cell is "near chance" when its score is below CHANCE_FACTOR × chance (chance = mean over the
# task's settings of 1 / vocab_size) or when its runs diverged without a finite score; a variant has collapsed when
# at least COLLAPSE_FRACTION of its judged tasks (scored or diverged) are near chance.
CHANCE_FACTOR = 3.0
COLLAPSE_FRACTION = 0.5
# Two rows of the reference table that are identical by construction (the mixer already L2-normalises keys;
# tests/test_identities.py checks that `deltanet variants --identities` finds it at every setting): the largest
# gap between their reported scores is the reference's own run-to-run noise.
REFERENCE_IDENTICAL_PAIR = ("delta_net_4layer_normalize_keys_in_for_loop", DELTA_BASELINE)


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


# ---------------------------------------------------------------------------------------------- identities, noise
def identical_cells(identities: dict | None, long: pd.DataFrame) -> dict[tuple[str, str], tuple[str, int, int]]:
    """``(variant, task display name) -> (equal_to, k, n)``: the cell's model equals ``equal_to`` by construction
    at k of the task's n settings (``identities``: ``results/<scale>/identities.json``, from ``deltanet.identities``).
    """
    if not identities:
        return {}
    equal = {(i["seq_len"], i["variant"]): i["equal_to"] for i in identities["identities"]}
    cells = {}
    for task in dict.fromkeys(long["task"]):
        seq_lens = list(identities["settings"].get(task, {}).values())
        for variant in dict.fromkeys(long["variant"]):
            counts = Counter(equal[(n, variant)] for n in seq_lens if (n, variant) in equal)
            if counts:
                equal_to, k = counts.most_common(1)[0]
                cells[(variant, DISPLAY_NAMES.get(task, task))] = (equal_to, k, len(seq_lens))
    return cells


def identical_everywhere(identical: dict, wide: pd.DataFrame, variant: str) -> str | None:
    """The model ``variant`` equals by construction at every setting of every grid task, else None."""
    cells = [identical.get((variant, c)) for c in task_columns(wide)]
    if not cells or any(c is None or c[1] < c[2] for c in cells) or len({c[0] for c in cells}) > 1:
        return None
    return cells[0][0]


def _identity_mark(equal_to: str, k: int, n: int, named: bool) -> str:
    """``≡`` (every setting) or ``≡k/n`` (k of the n settings), followed by the model's label if ``named``."""
    mark = IDENTICAL if k == n else f"{IDENTICAL}{k}/{n}"
    return f"{mark} {model_label(equal_to)}" if named else mark


def leaderboard_marks(board: pd.DataFrame, notes: dict, identical: dict) -> pd.DataFrame:
    """Marks of the leaderboard: each cell's note (diverged runs) and the model it equals by construction.

    A row identical to one model at every setting of every task names it once, on its Average (its task cells
    show ``≡`` alone): a name in every cell of a row would crowd the table.
    """
    marks = cell_marks(board, notes)
    for i, variant in board["variant"].items():
        same = identical_everywhere(identical, board, variant)
        for col in board.columns:
            if (variant, col) in identical:
                mark = _identity_mark(*identical[(variant, col)], named=same is None)
                marks.at[i, col] = " ".join(filter(None, [mark, marks.at[i, col]]))
        if same is not None and "Average" in board:
            marks.at[i, "Average"] = _identity_mark(same, 1, 1, named=True)
    return marks


def noise_floor(reference: pd.DataFrame) -> tuple[float, str]:
    """The largest gap over the tasks between the reference's two identical-by-construction rows, and its task."""
    ref = reference.set_index("variant")
    variant, twin = REFERENCE_IDENTICAL_PAIR
    gaps = (ref.loc[variant, SCORE_COLUMNS] - ref.loc[twin, SCORE_COLUMNS]).abs()
    return float(gaps.max()), str(gaps.idxmax())


def delta_marks(d: pd.DataFrame, long: pd.DataFrame, baseline: str, identical: dict, floor: float,
                notes: dict) -> pd.DataFrame:  # fmt: skip
    """Marks for ``deltas(wide, baseline)``: is each delta a finding?

    ``≡`` the variant equals the baseline by construction at every setting of the task (or, on the Average, of
    every task): the delta is training noise. ``≡k/n``: at k of the task's n settings. Then, when both cells have
    several seeds: ``*`` significant (their 95% CIs do not overlap), ``~`` not; the Average has no CI and gets no
    mark then. With one seed: ``~`` when ``|delta| < floor`` (``noise_floor``). Cell notes (diverged runs) follow.
    """
    cells = long.set_index(["variant", "display_name"])
    several = bool((long["n_seeds"] >= 2).any())
    marks = cell_marks(d, notes)
    for i, variant in d["variant"].items():
        for col in d.columns[1:]:
            if col == "Average":
                ident = (identical_everywhere(identical, d, variant), 1, 1)
            else:
                ident = identical.get((variant, col), (None, 0, 0))
            if ident[0] == baseline and ident[1] == ident[2]:
                parts = [IDENTICAL]
            else:
                parts = [f"{IDENTICAL}{ident[1]}/{ident[2]}"] if ident[0] == baseline else []
                parts.append(_noise_mark(cells, (variant, col), (baseline, col), d.at[i, col], floor, several))
            marks.at[i, col] = " ".join(filter(None, [*parts, marks.at[i, col]]))
    return marks


def _noise_mark(cells: pd.DataFrame, a: tuple, b: tuple, delta: float, floor: float, several: bool) -> str:
    """``*``/``~`` from cells a and b's 95% CIs when both have several seeds; else ``~`` below the one-seed floor."""
    if math.isnan(delta):
        return ""
    if a[1] != "Average" and min(cells.at[a, "n_seeds"], cells.at[b, "n_seeds"]) >= 2:
        apart = cells.at[a, "ci_low"] > cells.at[b, "ci_high"] or cells.at[b, "ci_low"] > cells.at[a, "ci_high"]
        return SIGNIFICANT if apart else NOISE
    return NOISE if not several and abs(delta) < floor else ""
