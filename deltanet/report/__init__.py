"""``deltanet report``: render ``report.html`` (self-contained) and ``report.md`` from the runs and accuracies.

Modules: ``analysis`` (leaderboard, deltas, collapse), ``reported_vs_reproduced`` (cell differences, Spearman),
``run_summary`` (run summary and provenance), ``plots`` (matplotlib figures), ``takeaways`` (rule-based text), ``sections``
(assembly), ``document``/``render`` (Markdown and HTML output).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from deltanet.aggregate import LONG_COLUMNS, discover_run_files, load_reference, read_run_files, score_runs, wide_table
from deltanet.io import atomic_path, write_text_atomic
from deltanet.runs import RunFileError
from deltanet.report import plots, reported_vs_reproduced
from deltanet.report.sections import ReportInputs, build_sections
from deltanet.report.render import to_html, to_markdown


def load_inputs(
    runs_dir: str | Path,
    accuracies: str | Path | None,
    kernels_summary: str | Path | None,
    scale: str | None,
    identities: str | Path | None = None,
) -> ReportInputs:
    """Read the run rows (and the accuracies, or aggregate the runs in memory when none are given)."""
    files = discover_run_files(runs_dir)
    if not files:
        raise RunFileError(f"{runs_dir}: no run files (<variant>/<task>.parquet)")
    runs = read_run_files(files)
    if accuracies is not None:
        long = pd.read_parquet(accuracies)
        missing = [c for c in LONG_COLUMNS if c not in long.columns]
        if missing:
            raise RunFileError(f"{accuracies}: not an accuracies table (missing columns {missing})")
    else:
        long = score_runs(runs)
    if scale is None:
        scales = sorted(set(runs["scale"])) if len(runs) else []
        scale = scales[0] if len(scales) == 1 else ("mixed: " + ", ".join(scales) if scales else "unknown")
    text = None
    if kernels_summary is not None:
        path = Path(kernels_summary)
        text = path.read_text() if path.is_file() else f"Kernel summary `{path}` was given but does not exist."
    return ReportInputs(scale, long, runs, files, load_reference(), text, read_identities(identities, scale))


def read_identities(path: str | Path | None, scale: str) -> dict | None:
    """``identities.json`` from ``deltanet variants --identities --out``; it must be of the report's scale."""
    if path is None:
        return None
    try:
        identities = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise RunFileError(f"{path}: not a readable identities file ({err})") from None
    if identities.get("scale") != scale:
        raise RunFileError(f"{path}: identities of scale {identities.get('scale')!r}, the report is of scale {scale!r}")
    return identities


def render_report(inp: ReportInputs, out_dir: str | Path) -> dict[str, Path]:
    """Write plots/*.png, report.md and report.html atomically under ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    wide = wide_table(inp.long)
    images = {
        "heatmap.png": plots.heatmap(wide),
        "task_bars.png": plots.task_bars(inp.long),
        "reported_vs_reproduced.png": plots.reported_vs_reproduced(reported_vs_reproduced.cell_differences(wide, inp.reference)),
    }
    paths = {}
    for name, data in images.items():
        paths[name] = out_dir / "plots" / name
        with atomic_path(paths[name]) as tmp:
            tmp.write_bytes(data)
    sections = build_sections(inp)
    title = f"DeltaNet variants on MAD — report ({inp.scale} scale)"
    paths["report.md"] = out_dir / "report.md"
    write_text_atomic(paths["report.md"], to_markdown(title, sections))
    paths["report.html"] = out_dir / "report.html"
    write_text_atomic(paths["report.html"], to_html(title, sections, images))
    return paths


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deltanet report", description=__doc__.split("\n")[0])
    p.add_argument("--runs-dir", "--runs", dest="runs_dir", required=True, help="results/<scale>/runs")
    p.add_argument("--accuracies", help="accuracies.parquet from `deltanet aggregate` (default: aggregate the runs)")
    p.add_argument("--out-dir", help="output folder (default: the runs folder's parent, results/<scale>)")
    p.add_argument("--kernels-summary", help="kernels/verify.md to embed (default: reported as not run)")
    p.add_argument("--scale", help="scale name shown in the report (default: from the run rows)")
    p.add_argument("--identities", help="identities.json from `deltanet variants --identities` (default: not marked)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out_dir = Path(args.out_dir) if args.out_dir else Path(args.runs_dir).resolve().parent
    try:
        inp = load_inputs(args.runs_dir, args.accuracies, args.kernels_summary, args.scale, args.identities)
    except RunFileError as err:
        print(f"deltanet report: error: {err}", file=sys.stderr)
        return 1
    paths = render_report(inp, out_dir)
    print(f"report -> {paths['report.html']} and {paths['report.md']}")
    return 0
