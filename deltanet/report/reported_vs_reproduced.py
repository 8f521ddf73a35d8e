"""Reported vs reproduced: cell-by-cell differences, Spearman rank correlations, variants whose rank moved.

Spearman's rho is the Pearson correlation of the average ranks (ties share the mean rank), computed with pandas;
it needs at least 3 variants present in both tables and is NaN otherwise or when either side is constant. The
overall figure correlates the ``Average`` column (variants with a complete average in both tables).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from deltanet.aggregate import SCORE_COLUMNS

MIN_SPEARMAN_N = 3


def spearman(x: pd.Series, y: pd.Series) -> float:
    """Spearman rank correlation of two aligned series over the positions where both are present."""
    both = pd.DataFrame({"x": x, "y": y}).dropna()
    if len(both) < MIN_SPEARMAN_N:
        return math.nan
    rx, ry = both["x"].rank(method="average"), both["y"].rank(method="average")
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx.to_numpy(), ry.to_numpy())[0, 1])


def _aligned(ours: pd.DataFrame, ref: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    common = sorted(set(ours["variant"]) & set(ref["variant"]))
    return ours.set_index("variant").loc[common], ref.set_index("variant").loc[common]


def cell_differences(ours: pd.DataFrame, ref: pd.DataFrame) -> pd.DataFrame:
    """Long table over the union of variants: variant, task, reported, reproduced, difference (ours − reported)."""
    o, r = ours.set_index("variant"), ref.set_index("variant")
    rows = []
    for variant in sorted(set(o.index) | set(r.index)):
        for col in [*SCORE_COLUMNS, "Average"]:
            rep = r.at[variant, col] if variant in r.index else math.nan
            rpr = o.at[variant, col] if variant in o.index else math.nan
            rows.append({"variant": variant, "task": col, "reported": rep, "reproduced": rpr,
                         "difference": rpr - rep})  # fmt: skip
    return pd.DataFrame(rows)


def side_by_side(ours: pd.DataFrame, ref: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """One row per variant, one text cell per task: ``reported → reproduced (difference)``; "—" when missing."""
    cells = cell_differences(ours, ref)

    def fmt(row: pd.Series) -> str:
        rep = "—" if math.isnan(row.reported) else f"{row.reported:.{digits}f}"
        rpr = "—" if math.isnan(row.reproduced) else f"{row.reproduced:.{digits}f}"
        d = round(row.difference, digits) + 0.0  # no "-0.000"
        diff = "" if math.isnan(d) else f" ({d:+.{digits}f})"
        return f"{rep} → {rpr}{diff}"

    cells["cell"] = cells.apply(fmt, axis=1)
    table = cells.pivot(index="variant", columns="task", values="cell")[[*SCORE_COLUMNS, "Average"]]
    table.columns.name = None
    return table.reset_index()


def spearman_table(ours: pd.DataFrame, ref: pd.DataFrame) -> pd.DataFrame:
    """Per task and overall (``Average``): n variants scored in both tables and Spearman's rho."""
    o, r = _aligned(ours, ref)
    rows = []
    for col in [*SCORE_COLUMNS, "Average"]:
        n = int((o[col].notna() & r[col].notna()).sum()) if len(o) else 0
        rho = spearman(o[col], r[col]) if len(o) else math.nan
        rows.append({"task": "overall (Average)" if col == "Average" else col, "n variants": n, "spearman": rho})
    return pd.DataFrame(rows)


def rank_moves(ours: pd.DataFrame, ref: pd.DataFrame, top: int = 5) -> pd.DataFrame:
    """Variants whose rank by average moved most between the tables (ranks among variants averaged in both)."""
    o, r = _aligned(ours, ref)
    both = pd.DataFrame({"reported": r["Average"] if len(r) else [], "reproduced": o["Average"] if len(o) else []})
    both = both.dropna()
    if both.empty:
        return pd.DataFrame(columns=["variant", "reported rank", "reproduced rank", "moved"])
    ranks = pd.DataFrame({
        "reported rank": both["reported"].rank(ascending=False, method="min").astype(int),
        "reproduced rank": both["reproduced"].rank(ascending=False, method="min").astype(int),
    })  # fmt: skip
    ranks["moved"] = ranks["reported rank"] - ranks["reproduced rank"]  # > 0: climbed in our table
    ranks = ranks[ranks["moved"] != 0]
    order = ranks["moved"].abs().sort_values(ascending=False, kind="stable").index
    return ranks.loc[order].head(top).rename_axis("variant").reset_index()
