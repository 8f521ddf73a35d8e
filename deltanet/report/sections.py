"""Assemble the report's sections (document blocks) from the accuracies, the run rows and the reference table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from deltanet.aggregate import SCORE_COLUMNS, cell_notes, wide_table
from deltanet.report import analysis, reported_vs_reproduced, run_summary
from deltanet.report.document import (
    IDENTICAL,
    LABEL_NOTE,
    NOISE,
    SIGNIFICANT,
    Image,
    Para,
    Section,
    Table,
    from_markdown,
)
from deltanet.report.takeaways import Noise, takeaways

TITLES = (
    "Run summary and provenance",
    "Takeaways",
    "Leaderboard",
    "Best variant per task",
    "Deltas against the baselines",
    "Variants that beat the gated baseline",
    "Collapsed variants",
    "Kernel verification",
    "Reported vs reproduced",
    "Plots",
)


@dataclass
class ReportInputs:
    scale: str
    long: pd.DataFrame  # accuracies long form (deltanet.aggregate.LONG_COLUMNS)
    runs: pd.DataFrame  # run rows (RUN_COLUMNS + setting fields)
    run_files: list[Path]
    reference: pd.DataFrame  # deltanet.aggregate.load_reference()
    kernels_summary: str | None  # markdown text of kernels/verify.md, None when not run
    identities: dict | None = None  # identities.json (deltanet.identities), None when not given


def build_sections(inp: ReportInputs) -> list[Section]:
    wide = wide_table(inp.long)
    grid_tasks = list(dict.fromkeys(inp.long["display_name"]))
    board = analysis.leaderboard(wide, grid_tasks)
    beats = analysis.beats_gated(wide)
    chance = analysis.chance_levels(inp.runs)
    notes = cell_notes(inp.long)
    diverged = analysis.diverged_cells(inp.long)
    collapse = analysis.collapsed(wide, chance, diverged)
    rho = reported_vs_reproduced.spearman_table(wide, inp.reference)
    moves = reported_vs_reproduced.rank_moves(wide, inp.reference)
    identical = analysis.identical_cells(inp.identities, inp.long)
    floor, floor_task = analysis.noise_floor(inp.reference)
    deltas = {base: analysis.deltas(wide, base) for base in analysis.BASELINES}
    marks = {base: analysis.delta_marks(d, inp.long, base, identical, floor, notes)
             for base, d in deltas.items() if d is not None}  # fmt: skip

    s: dict[str, list] = {t: [] for t in TITLES}
    s["Run summary and provenance"] = [Table(run_summary.summary(inp.runs, inp.scale, inp.run_files))]
    noise = Noise(floor, floor_task, identical, deltas, marks)
    s["Takeaways"] = [Para(" ".join(takeaways(inp.scale, wide, board, beats, collapse, rho, moves, inp.long, noise)))]

    avg_note = (
        "Average = unweighted mean over the six MAD tasks"
        if set(grid_tasks) == set(SCORE_COLUMNS)
        else f"Average = unweighted mean over this grid's {len(grid_tasks)} task(s) ({', '.join(grid_tasks)}), "
        "not the six MAD tasks"
    )
    s["Leaderboard"] = [
        Para(LABEL_NOTE),
        Para(f"Scores follow MAD-lab's `mad/analysis.py`: best test accuracy over the lr × weight-decay sweep per "
             f"setting and seed, mean over the task's settings, mean over seeds. {avg_note}; a variant without a "
             "score on a task (no runs, or runs that diverged) has no average and is listed last."),  # fmt: skip
        Table(board, marks=analysis.leaderboard_marks(board, notes, identical)),
        Para(identity_legend(inp.identities)),
    ]
    s["Best variant per task"] = [Table(analysis.best_per_task(wide))]

    blocks = [
        Para("Score minus the baseline's score (positive: better than the baseline); green above, red below, "
             "uncoloured when the delta is not a finding (marked ≡ or ~)."),
        Para(f"Marks: `{IDENTICAL}` the variant is identical to the baseline by construction at every setting of "
             f"the task (at every setting of every task, on the Average): the delta is training noise; "
             f"`{IDENTICAL}k/n` at k of the task's n settings. With several seeds per cell: `{SIGNIFICANT}` "
             f"significant, the two cells' 95% confidence intervals over seeds do not overlap (a conservative test), "
             f"`{NOISE}` they overlap; the Average has no interval and no mark. With one seed: `{NOISE}` marks a "
             f"delta smaller than {floor:.3f}, the largest gap between two rows of the reference table that are "
             f"identical by construction (`{analysis.REFERENCE_IDENTICAL_PAIR[0]}` vs "
             f"`{analysis.REFERENCE_IDENTICAL_PAIR[1]}`, on {floor_task}): such a delta is not distinguishable "
             f"from noise."),
    ]  # fmt: skip
    for base, d in deltas.items():
        blocks.append(Para(f"**vs `{base}`**"))
        blocks.append(Table(d, colour="delta", signed=True, marks=marks[base]) if d is not None
                      else Para(f"`{base}` was not run."))  # fmt: skip
    s["Deltas against the baselines"] = blocks

    gated = analysis.GATED_BASELINE
    if beats is None:
        s["Variants that beat the gated baseline"] = [Para(f"`{gated}` was not run, so there is nothing to beat.")]
    elif beats.empty:
        s["Variants that beat the gated baseline"] = [Para(f"No variant scores above `{gated}` on any task.")]
    else:
        s["Variants that beat the gated baseline"] = [Table(beats)]

    rule = (f"Rule: chance = mean over the task's settings of 1 / vocab_size (from the run rows; MAD baseline "
            f"vocabularies where absent). A score below {analysis.CHANCE_FACTOR:g} × chance is near chance, and so "
            f"is a task whose runs diverged without a finite score; a variant has collapsed when at least "
            f"{analysis.COLLAPSE_FRACTION:.0%} of its judged (scored or diverged) tasks are near chance.")  # fmt: skip
    chance_table = pd.DataFrame({"task": list(chance), "chance": list(chance.values()),
                                 "near-chance threshold": [analysis.CHANCE_FACTOR * c for c in chance.values()]})  # fmt: skip
    s["Collapsed variants"] = [
        Para(rule), Table(chance_table),
        Table(collapse) if len(collapse) else Para("No variant meets the collapse rule."),
    ]  # fmt: skip
    if len(diverged):
        s["Collapsed variants"] += [
            Para("Cells with diverged runs (NaN or inf training loss). A diverged run counts with the accuracy of "
                 "its best finite epoch, as in MAD; a cell where none has one has no score (`score` —)."),
            Table(diverged),
        ]  # fmt: skip

    s["Kernel verification"] = (
        from_markdown(inp.kernels_summary) if inp.kernels_summary is not None
        else [Para("Kernel verification was not run for this report (no summary file given).")]
    )  # fmt: skip

    s["Reported vs reproduced"] = [
        Para("Each cell: `reported → reproduced (reproduced − reported)`; — where a table lacks the cell. The "
             "reference is the published table shipped as `deltanet/data/reported_accuracies.csv`."),
        Table(reported_vs_reproduced.side_by_side(wide, inp.reference)),
        Para(f"Spearman rank correlation over the variants scored in both tables (needs at least "
             f"{reported_vs_reproduced.MIN_SPEARMAN_N}; — otherwise). The overall figure ranks by Average."),
        Table(rho, floatfmt=".3f"),
        Para("Variants whose rank by average moved most (positive `moved`: higher in the reproduced table):"),
        Table(moves) if len(moves) else Para("No variant changed rank (or too few are averaged in both tables)."),
    ]  # fmt: skip

    s["Plots"] = [
        Image("heatmap.png", "Heatmap of reproduced scores, variant × task"),
        Image("task_bars.png", "Per-task scores with 95% confidence intervals over seeds"),
        Image("reported_vs_reproduced.png", "Reported vs reproduced scores, one point per cell"),
    ]
    return [Section(t, s[t]) for t in TITLES]


def identity_legend(identities: dict | None) -> str:
    if identities is None:
        return ("The identity check was not given (`--identities`): cells identical to another model by "
                "construction are not marked.")  # fmt: skip
    return (f"`{IDENTICAL} X`: identical to `X` by construction at every setting of this task at this scale "
            f"(`{IDENTICAL}k/n X`: at k of its n settings; a row identical to `X` on every task names it once, on "
            f"its Average, and marks its tasks `{IDENTICAL}`), as found by `deltanet variants --identities` (random "
            f"tokens, shared random weights, logits within {identities['tolerance']:g}); its difference from `X` "
            "is training noise, not a finding.")  # fmt: skip


