"""The GPU check in one call on a fresh machine: figures first, correctness once, every measured row kept.

    python benchmarks/gpu_check.py --out DIR [--wheels WHEELS] [--budget-s SECONDS]

On one CUDA GPU, in this order, each part with its own time limit (``plan``), the figures that matter within the
first 5 minutes (``FIRST_FIGURES``):

1. cuda tests: ``pytest -m cuda -v`` on ``CUDA_TEST_FILES`` (a group resumed on CUDA, captured steps, fused groups),
   so a failure shows its traceback before any limit;
2. kernel compile: ``benchmarks/kernel_plan.py --warm I/8`` — one small call per distinct kernel call of the parts
   up to the next compile part, so that they compile nothing (each part's ``kernels_compiled``); fla's compilation
   and autotuning beside it (``kernels.py --warm-fla``);
3. kernels: ``benchmarks/kernels.py`` — ours and fla at the goal shape (and the naive loop there), then at the full
   scale's job shapes (DeltaNet 4×32, Gated DeltaNet 6×256/512, chunk 32, batch 128, T 128…1024), bf16, each with
   its error against the fp32 naive loop;
4. variant ratios: ``benchmarks/train_throughput.py --engines captured`` — every model's run-tokens/s under
   capture, ratio to the baseline (``replayed`` says whether a graph really ran);
5. protocol cost: ``benchmarks/protocol_cost.py`` — a steady epoch of a job's fused group per task and ``finish()``
   apart, the protocol in GPU-hours (unknown, not guessed, where a model's ratio is missing or not replayed);
6. engine check: ``benchmarks/engine_check.py`` — captured vs eager losses on the kernel path (with an
   eager-vs-eager control) and the dtypes reaching the op;
7. fused vs solo: ``benchmarks/train_throughput.py --engines solo,fused``;
8. short conv: ``benchmarks/short_conv.py`` — the mixer's short convolution (ours, keeping only its input) against
   ``F.conv1d`` at a fused group's shapes: time, peak memory and their difference (unmeasured on a GPU so far);
9. workflow: ``benchmarks/workflow_e2e.py`` — the workflow on the GPU (its slots, verify_kernels, train jobs of
   three models as fused, captured groups), one train job stopped by SIGTERM mid-epoch and resumed on CUDA;
10. verify compile, then verify-kernels: the full grid of ``deltanet verify-kernels --device cuda`` (fp32/fp16/bf16),
   one row per case, in 12 processes.

``benchmarks/packing.py`` (1, 4, 8 training processes on one GPU: 63.6 / 194.7 / 193.3 steps/s on 2026-12-04) is no
longer part of the check: fused runs replace packing processes. The default ``--budget-s`` is the set-up allowance
plus the parts' limits (535 s on a GPU): the whole check fits one 10-minute call. A part runs under the smaller of
its limit and what is left of the budget (its ``limit_s`` in the summary), and is skipped when less than 10 s are
left.

Nothing measured is lost: every part prints its rows as ``ROW <json>`` lines (``benchmarks/rows.py``); each row goes
into ``DIR/summary.json`` and ``DIR/summary.md`` (rewritten atomically) as soon as it is printed, so a part stopped at
its limit keeps its rows, and the summary lists what a part announced (``rows.expect``) but did not reach. Per part
it gives the wall seconds and, summed over its rows, the seconds spent warming up (compilation, autotuning) and
measuring. Each part's whole output is in ``DIR/<part>.log``. Exit 1 if any part failed, timed out or was skipped.

What a bare CUDA image lacks: every wheel in ``WHEELS`` is installed with ``pip --no-index --no-deps --target
DIR/site`` (put on every part's ``PYTHONPATH``, ahead of the image's packages), and the summary says which modules
were missing before and which still are; a part whose own modules are missing (the workflow part: Snakemake,
jsonschema) is skipped with one line naming them, before it starts. The image lent on 2026-12-04 (Python 3.12, torch
2.11 CUDA, triton 3.6, pandas, pyarrow, tabulate, torchmetrics, pytest) lacked jsonschema, Snakemake, fla-core and
einops. One command, on a machine with a package index, fetches every wheel the check needs into WHEELS (about 60
wheels, 30 MB; Snakemake's dependency connection_pool is published as a source archive only and is built first):

    bash benchmarks/gpu_wheels.sh WHEELS

Without a GPU the same command runs every part at tiny shapes (the Triton interpreter, the tiny scale, 2 processes
where the GPU has more; no fla; the compile parts record what would compile), so the CI exercises it
(``tests/test_gpu_check.py``); the limits are the GPU's there, shown and never enforced.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections import deque
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rows import EXPECT, emit, expect, parse  # noqa: E402  (benchmarks/ is this script's folder)

from deltanet.io import write_text_atomic  # noqa: E402  (torch-free)
from deltanet.machine import NvidiaSmiError, nvidia_gpus  # noqa: E402  (torch-free)

SETUP_S = 20  # nvidia-smi, installing the wheels, Python start-up: outside every part's limit
CALL_S = 540  # the whole check on a GPU must fit 9 minutes (a 10-minute call with room to spare)
MIN_PART_S = 10  # a part is not started with less time than this left in the budget
# modules the parts import: a bare CUDA image's missing ones are listed in the summary (fla, einops: optional)
NEEDED = ("torch", "triton", "numpy", "pandas", "pyarrow", "tabulate", "yaml", "jsonschema", "torchmetrics", "fla",
          "einops", "snakemake")  # fmt: skip
TAIL = 15  # lines of each part's stdout and stderr kept in the summary
# distributions whose versions the summary gives
VERSIONED = ("torch", "triton", "fla-core", "einops", "jsonschema", "snakemake")


@dataclass(frozen=True)
class Part:
    """One part: its commands run at once (one process each), under one time limit."""

    name: str
    commands: list[list[str]]
    limit_s: int
    env: dict[str, str] = field(default_factory=dict)
    optional_flag: str = ""  # a flag whose file argument is dropped when the file does not exist when the part starts
    needs: tuple[str, ...] = ()  # modules beyond torch's the part cannot run without: missing, it is skipped, named


def gpu_name() -> str | None:
    """The first NVIDIA GPU's name (``nvidia-smi -L``), or None without one (no torch import in this process)."""
    try:
        gpus = nvidia_gpus()
    except NvidiaSmiError:
        return None
    return gpus[0].name if gpus else None


# the files of ``pytest -m cuda``, in the order that matters: a group resumed on CUDA, captured steps, fused groups
# (tests/test_kernels.py's one CUDA test is the full-grid verification, which the verify-kernels part runs)
CUDA_TEST_FILES = ("tests/test_resume.py", "tests/test_capture.py", "tests/test_fused.py")
FIGURES_S = 300  # the figures that matter are in the summary within the first 5 minutes (FIRST_FIGURES' parts)
FIRST_FIGURES = ("cuda tests", "kernels", "variant ratios", "protocol cost")


def plan(out: Path, gpu: bool) -> list[Part]:
    """The parts in order, at the GPU's shapes or at tiny CPU shapes in the Triton interpreter.

    A compile part (``benchmarks/kernel_plan.py --warm``) compiles every kernel specialisation the parts after it
    launch, up to the next compile part, in 8 processes (fla's compilation and autotuning beside it), so that the
    parts time and check what is already compiled; each part's ``kernels_compiled`` says what it compiled itself.
    GPU limits, from the H200 run of 2026-12-04: compilation ~10–15 s per op call's kernels; 10 kernel rows on a warm
    cache; throughput took 79 s for one engine and the epochs 61 s; the cuda tests train a few tiny groups;
    verify-kernels' 54 cases are ~5 per process. Estimates: this order of parts has not run on a GPU yet."""
    py, bench = sys.executable, REPO / "benchmarks"
    interp = {} if gpu else {"TRITON_INTERPRET": "1"}
    warms, fla_warms, shards = (8, 2, 12) if gpu else (2, 1, 2)
    scale = ["--scale", "full" if gpu else "tiny"]
    throughput = [py, str(bench / "train_throughput.py"), *scale]
    ratios = [*throughput, "--engines", "captured" if gpu else "fused", "--json", str(out / "throughput.json")]
    fused = [*throughput, "--engines", "solo,fused"]
    protocol = [py, str(bench / "protocol_cost.py"), *scale, "--epochs", "3",
                "--throughput", str(out / "throughput.json"), "--json", str(out / "protocol_cost.json")]  # fmt: skip
    engine = [py, str(bench / "engine_check.py"), *scale]
    conv = [py, str(bench / "short_conv.py"), *scale]
    workflow = [py, str(bench / "workflow_e2e.py"), "--out", str(out / "workflow")]
    # -o addopts=: in this one process (pyproject.toml's -n needs pytest-xdist, which a bare CUDA image lacks)
    cuda_tests = [py, "-m", "pytest", "-o", "addopts=", "-m", "cuda", "-v", "--tb=long", "-ra",
                  *(str(REPO / f) for f in CUDA_TEST_FILES)]  # fmt: skip
    verify = [py, str(bench / "gpu_check.py"), "--device", "cuda" if gpu else "cpu", *([] if gpu else ["--quick"])]
    if gpu:
        ratios += ["--steps", "2", "--warmup", "1"]
        fused += ["--steps", "2", "--warmup", "1"]
    else:
        ratios += ["--seq-len", "32", "--steps", "1", "--warmup", "1"]
        fused += ["--seq-len", "32", "--steps", "1", "--warmup", "1", "--variants", "delta_net_4layer"]
        protocol += ["--steps-per-epoch", "2", "--tasks", "context_recall,memorization"]
        engine += ["--seq-len", "32", "--steps", "2"]
        conv += ["--seq-len", "32", "--steps", "1", "--warmup", "1"]
        workflow += ["--cpu"]
    warm_fla = [[py, str(bench / "kernels.py"), "--warm-fla", f"{i}/{fla_warms}"] for i in range(fla_warms)]
    parts = [
        Part("cuda tests", [cuda_tests], 45),
        Part("kernel compile", [[py, str(bench / "kernel_plan.py"), "--warm", f"{i}/{warms}"] for i in range(warms)]
             + warm_fla, 60, interp),
        Part("kernels", [[py, str(bench / "kernels.py")]], 45, interp),
        Part("variant ratios", [ratios], 80),
        Part("protocol cost", [protocol], 50, optional_flag="--throughput"),
        Part("engine check", [engine], 40, interp),
        Part("fused vs solo", [fused], 40),
        Part("short conv", [conv], 15),
        Part("workflow", [workflow], 80, needs=("snakemake", "jsonschema")),
        Part("verify compile", [[py, str(bench / "kernel_plan.py"), "--warm", f"{i}/{warms}"] for i in range(warms)],
             40, interp),
        Part("verify-kernels", [[*verify, "--verify-shard", f"{i}/{shards}"] for i in range(shards)], 20, interp),
    ]
    return [compiling(part, parts) for part in parts]  # fmt: skip


def compiling(part: Part, parts: list[Part]) -> Part:
    """A compile part's commands with ``--parts``: the parts after it up to the next compile part (others as given)."""
    if not part.name.endswith("compile"):
        return part
    after = [p.name for p in parts[parts.index(part) + 1 :]]
    served = after[: next((i for i, name in enumerate(after) if name.endswith("compile")), len(after))]
    commands = [[*cmd, "--parts", ",".join(served)] if cmd[1].endswith("kernel_plan.py") else cmd
                for cmd in part.commands]  # fmt: skip
    return dataclasses.replace(part, commands=commands)


def default_budget(parts: list[Part]) -> int:
    """The set-up allowance plus every part's limit: the budget in which the whole check runs to the end."""
    return SETUP_S + sum(p.limit_s for p in parts)


def wheel_modules(wheel: Path) -> set[str]:
    """The top-level modules a wheel installs (from its file list; none when it is no zip: pip will say why)."""
    try:
        with zipfile.ZipFile(wheel) as z:
            tops = {name.split("/")[0] for name in z.namelist() if "/" in name or name.endswith((".py", ".so"))}
    except zipfile.BadZipFile:
        return set()
    return {t.split(".")[0] for t in tops if not t.endswith((".dist-info", ".data")) and t != "__pycache__"}


def missing(modules, extra_path: Path | None = None) -> list[str]:
    """The modules this Python cannot import (without importing them), with ``extra_path`` first on sys.path."""
    if extra_path is not None:
        sys.path.insert(0, str(extra_path))
        importlib.invalidate_caches()
    try:
        return sorted(m for m in set(modules) if importlib.util.find_spec(m) is None)
    finally:
        if extra_path is not None:
            sys.path.remove(str(extra_path))


def install_wheels(wheels: Path | None, target: Path) -> dict:
    """Install every wheel in ``wheels`` into ``target`` (pip, no index, no dependencies); say what was missing.

    Returns {"wheels", "missing_before", "still_missing", "site" (target, or None when nothing was installed),
    "note"}; the modules checked are :data:`NEEDED` and those the wheels hold."""
    files = sorted(wheels.glob("*.whl")) if wheels is not None else []
    modules = set(NEEDED).union(*(wheel_modules(f) for f in files))
    info = {"wheels": [f.name for f in files], "missing_before": missing(modules), "site": None}
    if wheels is None:
        note = "no --wheels folder"
    elif not files:
        note = f"no wheels in {wheels}"
    else:
        cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--upgrade", "--quiet",
               "--disable-pip-version-check", "--target", str(target), *map(str, files)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            note = f"pip could not install the wheels: {done.stderr.strip()[-300:]}"
        else:
            info["site"], note = str(target), f"{len(files)} wheels installed into {target}"
    site = Path(info["site"]) if info["site"] else None
    return {**info, "still_missing": missing(modules, site), "note": note}


def versions(site: str | None) -> dict[str, str]:
    """Installed versions of :data:`VERSIONED` as the parts see them (the wheels' site first), without imports."""
    from importlib import metadata

    found: dict[str, str] = {}
    for dist in metadata.distributions(path=[*([site] if site else []), *sys.path]):
        name = (dist.metadata["Name"] or "").lower()
        if name in VERSIONED:
            found.setdefault(name, dist.version)
    return {name: found.get(name, "absent") for name in VERSIONED}


def triton_cache() -> Path:
    """Where Triton keeps compiled kernels for the parts (``TRITON_CACHE_DIR``, else its default)."""
    return Path(os.environ.get("TRITON_CACHE_DIR") or Path.home() / ".triton" / "cache")


def kernels_in_cache() -> int:
    """Compiled kernels in the Triton cache: each compile writes one ``__grp__<kernel>.json`` (its files' index)
    beside the kernel's binaries, the launchers none. So a part's count is the Triton compiles it did (cache
    misses; fla's autotuning compiles one per configuration tried); 0 in the interpreter, which compiles nothing."""
    return sum(1 for _ in triton_cache().glob("*/__grp__*.json"))


def not_reached(result: dict) -> list[str]:
    """What a part announced but did not emit; the whole part when it did not run."""
    if result["status"].startswith("skipped") or result["status"] == "not started":
        return ["the whole part"]
    left = []
    for announced in result["expected"]:
        seen = {json.dumps(row.get(announced["key"])) for row in result["rows"]}
        left += [str(v) for v in announced["values"] if json.dumps(v) not in seen]
    if result["status"] not in ("ok", "running") and not result["expected"]:
        left.append("every row after the last one shown (this part announces none)")
    return left


def total(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return round(sum(values), 1) if values else None


def run_part(part: Part, out: Path, deadline: float, on_change=lambda result: None, site: str | None = None,
             enforce: bool = True) -> dict:
    """Run the part's commands at once; collect their ``ROW`` lines into the result's ``rows`` as they come
    (``on_change(result)`` after each); kill every process (and its children) at the limit. Returns the result.

    ``enforce`` False (no GPU): the limits are the GPU's; the part runs to its end however long this machine takes,
    and ``limit_s`` is shown for reference only."""
    result = {"part": part.name, "status": "running", "limit_s": part.limit_s, "rows": [], "expected": [],
              "log": re.sub(r"[^a-z0-9]+", "_", part.name.lower()).strip("_") + ".log", "notes": []}  # fmt: skip
    absent = missing(part.needs, Path(site) if site else None)
    if absent:
        return {**result, "status": f"skipped: needs {', '.join(absent)} (missing: bring it with --wheels, "
                                    "benchmarks/gpu_wheels.sh)", "not_reached": ["the whole part"]}
    left = deadline - time.monotonic()
    if enforce and left < MIN_PART_S:
        return {**result, "status": "skipped: the check's time budget is spent", "not_reached": ["the whole part"]}
    limit = result["limit_s"] = int(min(part.limit_s, left)) if enforce else part.limit_s
    if not enforce:
        result["notes"].append(f"limit {part.limit_s} s is the GPU's: not enforced without a GPU")
    commands = [list(cmd) for cmd in part.commands]
    for cmd in commands:
        if part.optional_flag in cmd and not Path(cmd[cmd.index(part.optional_flag) + 1]).exists():
            i = cmd.index(part.optional_flag)
            result["notes"].append(f"{part.optional_flag} {cmd[i + 1]} left out: the file does not exist")
            del cmd[i : i + 2]
    path = [str(REPO), str(REPO / "benchmarks"), *([site] if site else []), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, **part.env, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    started, cached = time.monotonic(), kernels_in_cache()
    lines: queue.Queue = queue.Queue()
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
                              start_new_session=True) for cmd in commands]  # fmt: skip

    def pump(i: int, stream: str, pipe) -> None:
        for line in pipe:
            lines.put((i, stream, line.rstrip("\n")))
        lines.put((i, stream, None))

    readers = [threading.Thread(target=pump, args=(i, s, getattr(p, s)), daemon=True)
               for i, p in enumerate(procs) for s in ("stdout", "stderr")]  # fmt: skip
    for reader in readers:
        reader.start()
    on_change(result)
    tails = {"stdout": deque(maxlen=TAIL), "stderr": deque(maxlen=TAIL)}
    timed_out, open_streams = False, len(readers)
    with (out / result["log"]).open("w") as log:

        def take(i: int, stream: str, line: str) -> None:
            log.write((f"[{i}] " if len(procs) > 1 else "") + line + "\n")
            log.flush()
            row = parse(line) if stream == "stdout" else None
            if row is None:
                if not (stream == "stdout" and result["rows"] and line.startswith("|")):  # tables repeat the rows
                    tails[stream].append(line)
            elif EXPECT in row:
                result["expected"].append(row[EXPECT])
            else:
                result["rows"].append(row)
                on_change(result)

        try:
            while open_streams:
                left = started + limit - time.monotonic() if enforce else 1.0
                if left <= 0:
                    timed_out = True
                    break
                try:
                    i, stream, line = lines.get(timeout=min(left, 1.0))
                except queue.Empty:
                    continue
                if line is None:
                    open_streams -= 1
                else:
                    take(i, stream, line)
        except BaseException:  # interrupted: stop every process below
            timed_out = True
            raise
        finally:
            for proc in procs:
                try:
                    proc.wait(timeout=0 if timed_out else max(0.0, started + limit - time.monotonic())
                              if enforce else None)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    os.killpg(proc.pid, signal.SIGKILL)  # its whole session: packing's workers too
            for reader in readers:
                reader.join(timeout=5)
            while not lines.empty():  # rows printed just before the kill
                i, stream, line = lines.get()
                if line is not None:
                    take(i, stream, line)
    codes = [proc.wait() for proc in procs]
    if timed_out:
        status = f"timed out after {limit} s"
    else:
        status = next((f"failed (exit {c})" for c in codes if c), "ok")
    result.update(status=status, seconds=round(time.monotonic() - started, 1),
                  kernels_compiled=kernels_in_cache() - cached,
                  warmup_s=total(result["rows"], "warmup_s"), measure_s=total(result["rows"], "measure_s"),
                  stdout_tail=list(tails["stdout"]), stderr_tail=list(tails["stderr"]))  # fmt: skip
    result["not_reached"] = not_reached(result)
    return result


def cell(value) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|")


def table(rows: list[dict]) -> list[str]:
    """Markdown table of rows, columns in order of first appearance."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]


def summary_markdown(meta: dict, results: list[dict]) -> str:
    wheels = meta["wheels"]
    lines = [f"# GPU check — {meta['date']}", "",
             f"- device: {meta['device']}; Python {meta['python']}; "
             + ", ".join(f"{name} {version}" for name, version in meta["versions"].items()),
             f"- budget {meta['budget_s']} s (set-up {SETUP_S} s + the parts' limits"
             f"{'' if meta['limits'] else '; the GPU’s, not enforced without one'}); " +
             (f"{meta['seconds']} s in all" if "seconds" in meta else f"still running: {meta['elapsed_s']} s so far"),
             f"- wheels: {wheels['note']}; missing before: {', '.join(wheels['missing_before']) or 'none'}; "
             f"still missing: {', '.join(wheels['still_missing']) or 'none'}",
             "- `pytest -m cuda` runs first, without its full-grid test (the verify-kernels part runs that grid)", "",
             "Warm-up and measuring seconds are summed over a part's rows (over its processes where several run at "
             "once); the rest of its seconds is start-up (imports, data, process launch).", "",
             "Kernels compiled: Triton compiles during the part, counted in its cache (`kernels_in_cache`); the goal "
             "is 0 after the compile parts (`benchmarks/kernel_plan.py` derives it without a GPU).", "",
             "| part | status | limit s | seconds | warm-up s | measuring s | kernels compiled | rows | not reached |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for r in results:
        left = r.get("not_reached", [])
        left_text = ("none" if not left else f"{len(left)}: {', '.join(left[:3])}{', …' if len(left) > 3 else ''}")
        lines.append(f"| {r['part']} | {r['status']} | {r['limit_s']} | {cell(r.get('seconds', ''))} | "
                     f"{cell(r.get('warmup_s') or '')} | {cell(r.get('measure_s') or '')} | "
                     f"{r.get('kernels_compiled', '')} | {len(r.get('rows', []))} "
                     f"| {left_text} |")  # fmt: skip
    for r in results:
        if "rows" not in r or r["status"] == "not started":
            continue
        lines += ["", f"## {r['part']}", "", f"{r['status']}; log: `{r['log']}`"]
        lines += [f"- {note}" for note in r["notes"]]
        if r["rows"]:
            lines += ["", *table(r["rows"])]
        if r.get("not_reached"):
            lines += ["", "Not reached: " + "; ".join(r["not_reached"])]
        if r.get("stdout_tail"):
            lines += ["", "Last lines of its output:", "", "```", *r["stdout_tail"], "```"]
        if r["status"] != "ok" and r.get("stderr_tail"):
            lines += ["", "Last lines of its errors:", "", "```", *r["stderr_tail"], "```"]
    return "\n".join(lines) + "\n"


def write_summary(out: Path, meta: dict, results: list[dict]) -> None:
    write_text_atomic(out / "summary.json", json.dumps({**meta, "parts": results}, indent=1))
    write_text_atomic(out / "summary.md", summary_markdown(meta, results))


def verify_shard(share: int, shares: int, device: str, quick: bool) -> int:
    """Run the I-th of N shares of verify-kernels' cases, one row per case; 1 if any failed."""
    from deltanet.verify_kernels import make_cases, run_case

    cases = make_cases(device, quick)[share::shares]
    expect("case", [case.label for case in cases])
    failed = 0
    for case in cases:
        start = time.perf_counter()
        try:
            checks = run_case(case, device)
        except Exception as exc:  # a crashing kernel is a failed case
            failed += 1
            emit(case=case.label, passed=False, error=f"{type(exc).__name__}: {exc}"[:300])
            continue
        ratio = [c["rms_ratio_err"] / c["tolerance"] for c in checks]
        worst = checks[max(range(len(checks)), key=lambda i: ratio[i] if ratio[i] == ratio[i] else float("inf"))]
        passed = all(c["passed"] for c in checks)
        failed += not passed
        kernel_s = checks[0]["kernel_seconds"]
        emit(case=case.label, passed=passed, worst_tensor=worst["tensor"], rms_ratio_err=worst["rms_ratio_err"],
             tolerance=worst["tolerance"], warmup_s=round(kernel_s, 2),
             measure_s=round(time.perf_counter() - start - kernel_s, 2))  # fmt: skip
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="directory for summary.md, summary.json and the parts' logs")
    p.add_argument("--wheels", type=Path, help="folder of wheels to install first (see the docstring)")
    p.add_argument("--budget-s", type=float, help="stop starting parts after this many seconds (default: they fit)")
    p.add_argument("--verify-shard", metavar="I/N", help=argparse.SUPPRESS)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.verify_shard:
        share, shares = (int(n) for n in args.verify_shard.split("/"))
        return verify_shard(share, shares, args.device, args.quick)
    if args.out is None:
        p.error("--out is required")
    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TRITON_CACHE_DIR", str(args.out.resolve() / "triton-cache"))  # every part's, counted
    gpu = gpu_name()
    parts = plan(args.out, gpu is not None)
    budget = args.budget_s if args.budget_s is not None else default_budget(parts)
    deadline = started + budget
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": gpu or "no GPU: tiny CPU shapes",
            "python": platform.python_version(), "budget_s": budget, "limits": gpu is not None,
            "wheels": install_wheels(args.wheels, args.out / "site")}  # fmt: skip
    meta["versions"] = versions(meta["wheels"]["site"])
    results = [{"part": part.name, "status": "not started", "limit_s": part.limit_s, "not_reached": ["the whole part"]}
               for part in parts]  # fmt: skip
    for i, part in enumerate(parts):

        def on_change(result: dict, i: int = i) -> None:
            results[i] = {**result, "not_reached": not_reached(result)}
            meta["elapsed_s"] = round(time.monotonic() - started, 1)
            write_summary(args.out, meta, results)

        results[i] = run_part(part, args.out, deadline, on_change, meta["wheels"]["site"], enforce=gpu is not None)
        print(f"gpu_check: {part.name}: {results[i]['status']}", flush=True)
    meta["seconds"] = round(time.monotonic() - started, 1)
    write_summary(args.out, meta, results)
    print(f"gpu_check: summary in {args.out / 'summary.md'}")
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
