"""The report's figures (matplotlib, Agg backend), returned as PNG bytes: heatmap, per-task bars, reported vs ours."""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from deltanet.aggregate import SCORE_COLUMNS  # noqa: E402
from deltanet.report.document import model_label  # noqa: E402

PLOT_NAMES = ("heatmap.png", "task_bars.png", "reported_vs_reproduced.png")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def heatmap(wide: pd.DataFrame) -> bytes:
    """Variant × task (and average) scores; missing cells are hatched grey and labelled, never coloured as 0."""
    cols = [*SCORE_COLUMNS, "Average"]
    data = wide[cols].to_numpy(dtype=float)
    n = max(len(wide), 1)
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.32 * n))
    ax.set_facecolor("#dddddd")
    im = ax.imshow(np.ma.masked_invalid(data) if len(wide) else np.zeros((1, len(cols))), cmap="viridis",
                   vmin=0, vmax=1, aspect="auto")  # fmt: skip
    for i in range(len(wide)):
        for j in range(len(cols)):
            v = data[i, j]
            text, colour = ("missing", "black") if math.isnan(v) else (f"{v:.2f}", "white" if v < 0.6 else "black")
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(wide)), [model_label(v) for v in wide["variant"]], fontsize=8)
    fig.colorbar(im, ax=ax, label="MAD score (test accuracy)")
    ax.set_title("Reproduced MAD scores")
    return _png(fig)


def task_bars(long: pd.DataFrame) -> bytes:
    """One panel per task: each variant's score with its 95% CI over seeds (no bar for a missing cell)."""
    variants = sorted(set(long["variant"]))
    fig, axes = plt.subplots(2, 3, figsize=(13, 2 + 0.55 * max(len(variants), 1)), sharey=True)
    for ax, col in zip(axes.flat, SCORE_COLUMNS):
        cell = long[long["display_name"] == col].set_index("variant").reindex(variants)
        y = np.arange(len(variants))
        score = cell["score"].to_numpy(dtype=float)
        lo = np.nan_to_num(score - cell["ci_low"].to_numpy(dtype=float), nan=0.0)
        hi = np.nan_to_num(cell["ci_high"].to_numpy(dtype=float) - score, nan=0.0)
        ax.barh(y, np.nan_to_num(score, nan=0.0), xerr=[lo, hi], color="#4477aa", ecolor="black", capsize=2)
        for yi, v in zip(y, score):
            if math.isnan(v):
                ax.text(0.01, yi, "missing", va="center", fontsize=7, color="#aa3333")
        ax.set_title(col)
        ax.set_xlim(0, 1)
        ax.set_yticks(y, [model_label(v) for v in variants], fontsize=7)
    axes.flat[0].invert_yaxis()  # shared y axis: invert once so the first variant is on top
    fig.suptitle("Per-task scores (error bars: 95% CI over seeds where more than one seed ran)")
    fig.tight_layout()
    return _png(fig)


def reported_vs_reproduced(cells: pd.DataFrame) -> bytes:
    """Scatter of every cell present in both tables: reported (x) against reproduced (y), one colour per task."""
    fig, ax = plt.subplots(figsize=(6, 6))
    both = cells[cells["task"].isin(SCORE_COLUMNS)].dropna(subset=["reported", "reproduced"])
    for col in SCORE_COLUMNS:
        part = both[both["task"] == col]
        if len(part):
            ax.scatter(part["reported"], part["reproduced"], label=col, s=22, alpha=0.8)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="y = x")
    if both.empty:
        ax.text(0.5, 0.5, "no cell present in both tables", ha="center", va="center")
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="reported", ylabel="reproduced", title="Reported vs reproduced")
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)
