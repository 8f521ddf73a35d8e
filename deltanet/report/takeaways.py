"""The takeaways paragraph, produced by fixed rules from the numbers (no hand-written or generated claims).

Each rule looks at one computed table and emits a sentence only when its data exist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from deltanet.report.analysis import (
    DELTA_BASELINE,
    GATED_BASELINE,
    REFERENCE_IDENTICAL_PAIR,
    diverged_cells,
    identical_everywhere,
)
from deltanet.report.document import NOISE, SIGNIFICANT, not_a_finding

# Spearman bands used in the wording
STRONG_RHO, MODERATE_RHO = 0.7, 0.4
# a baseline this far below the other on a task, below the full scale, gets the sentence of _baselines_apart
BASELINE_GAP = 0.3


def _band(rho: float) -> str:
    if rho >= STRONG_RHO:
        return "strong"
    if rho >= MODERATE_RHO:
        return "moderate"
    return "weak or no"


@dataclass
class Noise:
    """What says whether a difference is a finding (``deltanet.report.analysis``)."""

    floor: float  # noise_floor: the reference's identical-pair gap
    floor_task: str
    identical: dict  # identical_cells
    deltas: dict[str, pd.DataFrame | None]  # deltas per baseline (None: not run)
    marks: dict[str, pd.DataFrame]  # delta_marks per baseline that was run


def takeaways(
    scale: str,
    wide: pd.DataFrame,
    board: pd.DataFrame,
    beats: pd.DataFrame | None,
    collapse: pd.DataFrame,
    rho: pd.DataFrame,
    moves: pd.DataFrame,
    long: pd.DataFrame,
    noise: Noise,
) -> list[str]:
    out: list[str] = []
    same = {v: identical_everywhere(noise.identical, wide, v) for v in wide["variant"]}
    if scale != "full":
        out.append(
            f"This report is at scale `{scale}`, not `full`: models, settings and training budgets differ from "
            "the MAD protocol, so these numbers are **not comparable** with the reference table; the "
            "reported-vs-reproduced section only checks the plumbing at this scale."
        )
    missing = long[long["n_runs"] == 0]
    if len(missing):
        out.append(f"{len(missing)} of {len(long)} variant × task cells have no runs and are shown as missing.")
    diverged = diverged_cells(long)
    for variant, cells in diverged.groupby("variant", sort=True):
        where = [f"{c['task']} ({c['diverged runs']}/{c['runs']} runs"
                 + (", no finite score)" if math.isnan(c["score"]) else ")") for _, c in cells.iterrows()]  # fmt: skip
        out.append(f"`{variant}` diverged on {_join(where)}.")
    ranked = board.dropna(subset=["Average"])
    if len(ranked):
        top = ranked.iloc[0]
        twin = f", identical to `{same[top['variant']]}` by construction" if same.get(top["variant"]) else ""
        out.append(f"`{top['variant']}` leads the leaderboard with an average of {top['Average']:.3f} "
                   f"({len(ranked)} variants with a complete average{twin}).")  # fmt: skip
    w = wide.set_index("variant")["Average"]
    if DELTA_BASELINE in w and GATED_BASELINE in w and not (math.isnan(w[DELTA_BASELINE]) or math.isnan(w[GATED_BASELINE])):
        diff = w[GATED_BASELINE] - w[DELTA_BASELINE]
        out.append(f"`{GATED_BASELINE}` averages {w[GATED_BASELINE]:.3f} against {w[DELTA_BASELINE]:.3f} for "
                   f"`{DELTA_BASELINE}` ({diff:+.3f}).")  # fmt: skip
        above = [v for v, a in w.items() if v not in (DELTA_BASELINE, GATED_BASELINE) and same[v] is None
                 and a > max(w[DELTA_BASELINE], w[GATED_BASELINE])]  # fmt: skip
        out.append(f"{len(above)} variant(s) average above both baselines"
                   + (": " + ", ".join(f"`{v}`" for v in above) + "." if above else "."))  # fmt: skip
        if scale != "full":
            out += _baselines_apart(wide)
    if beats is not None:
        if beats.empty:
            out.append(f"No variant beats `{GATED_BASELINE}` on any task.")
        else:
            counts = beats.groupby("variant").size().sort_values(ascending=False, kind="stable")
            marks = _mark_lookup(noise.deltas.get(GATED_BASELINE), noise.marks.get(GATED_BASELINE))
            wins = beats[["variant", "task"]].itertuples(index=False, name=None)
            real = sum(not not_a_finding(marks.get(win, "")) for win in wins)
            out.append(f"{len(counts)} variant(s) beat `{GATED_BASELINE}` on at least one task; "
                       f"`{counts.index[0]}` does so on the most tasks ({counts.iloc[0]}); {real} of these "
                       f"{len(beats)} wins are beyond the noise (not marked ≡ or ~ in the deltas against "
                       "it).")  # fmt: skip
    if len(collapse):
        out.append(f"{len(collapse)} variant(s) collapsed to near-chance scores: "
                   + ", ".join(f"`{v}`" for v in collapse["variant"]) + ".")  # fmt: skip
    elif len(diverged):
        out.append("No variant is near chance or diverged on at least half of its tasks.")
    else:
        out.append("No variant collapsed to near-chance scores.")
    overall = rho[rho["task"] == "overall (Average)"].iloc[0]
    if not math.isnan(overall["spearman"]):
        out.append(f"Ranking by average agrees with the reported table with Spearman ρ = {overall['spearman']:.2f} "
                   f"over {overall['n variants']} shared variants ({_band(overall['spearman'])} agreement).")  # fmt: skip
    else:
        out.append("Too few variants are averaged in both tables for a rank correlation with the reported numbers.")
    if len(moves):
        m = moves.iloc[0]
        out.append(f"The largest rank move is `{m['variant']}`: reported rank {m['reported rank']}, "
                   f"reproduced rank {m['reproduced rank']}.")  # fmt: skip
    out += _identity_and_noise(long, noise, same)
    if len(diverged):
        out.append("A diverged run counts with the accuracy of its best finite epoch, as in MAD; a cell where no "
                   "run has one has no score, and its variant no average.")
    return out


def _baselines_apart(wide: pd.DataFrame) -> list[str]:
    """Below the full scale, a baseline far behind the other is most likely a training-budget effect: say so."""
    scores = wide.set_index("variant").drop(columns="Average")
    gaps = (scores.loc[DELTA_BASELINE] - scores.loc[GATED_BASELINE]).dropna()
    lagging = gaps[gaps.abs() > BASELINE_GAP]
    if lagging.empty:
        return []
    where = ", ".join(f"{task} ({scores.at[GATED_BASELINE, task]:.3f} vs {scores.at[DELTA_BASELINE, task]:.3f})"
                      for task in lagging.index)  # fmt: skip
    return [f"The two baselines are far apart on {where} (`{GATED_BASELINE}` vs `{DELTA_BASELINE}`). At this scale "
            "every model trains at the scale's single learning rate, which can be far from a model's best (at "
            "the tiny size Gated DeltaNet's output gate needs smaller ones than DeltaNet: docs/fidelity.md, "
            "\"Tiny scale\"). The full scale sweeps the learning rate and keeps each model's best, as MAD does."]


def _mark_lookup(d: pd.DataFrame | None, marks: pd.DataFrame | None) -> dict[tuple[str, str], str]:
    """``(variant, column) -> mark`` of a deltas table ``d`` and its ``delta_marks``."""
    if d is None or marks is None:
        return {}
    return {(v, c): marks.at[i, c] for i, v in d["variant"].items() for c in d.columns[1:]}


def _identity_and_noise(long: pd.DataFrame, noise: Noise, same: dict) -> list[str]:
    """Which models are identical by construction, and how many deltas against the baseline are findings."""
    out = []
    twins = [f"`{v}` ≡ `{b}`" for v, b in same.items() if b is not None]
    if twins:
        out.append("Identical by construction at every setting of this scale (computed), so their differences are "
                   f"training noise, not findings: {', '.join(twins)}.")  # fmt: skip
    partial = sum(1 for v, _ in noise.identical if same.get(v) is None)
    if partial:
        out.append(f"{partial} more variant × task cell(s) are identical to another model by construction at some "
                   "or all of their settings (marked ≡).")  # fmt: skip
    marks, d = noise.marks.get(DELTA_BASELINE), noise.deltas.get(DELTA_BASELINE)
    if d is None:
        return out
    finite = {(v, c) for i, v in d["variant"].items() for c in d.columns[1:]
              if c != "Average" and not math.isnan(d.at[i, c])}  # fmt: skip
    cells = [m for key, m in _mark_lookup(d, marks).items() if key in finite]
    if (long["n_seeds"] >= 2).any():
        out.append(f"{sum(SIGNIFICANT in m.split() for m in cells)} of {len(cells)} task deltas against "
                   f"`{DELTA_BASELINE}` are significant (the two cells' 95% confidence intervals do not "
                   "overlap).")  # fmt: skip
    else:
        out.append(f"With one seed, a delta below {noise.floor:.3f} — the largest gap between two rows of the "
                   f"reference table that are identical by construction (`{REFERENCE_IDENTICAL_PAIR[0]}` vs "
                   f"`{REFERENCE_IDENTICAL_PAIR[1]}`, on {noise.floor_task}) — is not distinguishable from noise; "
                   f"{sum(NOISE in m.split() for m in cells)} of {len(cells)} task deltas against `{DELTA_BASELINE}` "
                   "are below it (marked ~).")  # fmt: skip
    return out


def _join(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
