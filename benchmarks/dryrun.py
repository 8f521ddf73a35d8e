"""The full-grid dry run against Snakemake's own floor: the same number of jobs from a trivial Snakefile.

    python benchmarks/dryrun.py [--runs 5] [--keep DIR]

Copies the workflow into a temporary folder (results/ and .snakemake/ here stay untouched), counts the jobs of
``snakemake -n --config scale=full``, writes beside it a Snakefile of one rule with that many jobs and no imports,
then times the two dry runs in turn (A B A B ..., after one warm-up each) as whole processes. Prints each run's
CPU (user + sys) and wall seconds, the medians and the median of the pairwise ratios (goal: workflow / floor
<= 1.5; CPU time is the steadier figure on a shared machine). ``--keep DIR`` builds
the two folders in DIR and leaves them there, for timing the same two commands with another tool.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "config.yaml", "pyproject.toml", "Dockerfile", "requirements", "workflow", "deltanet")
DRY_RUN = ("--dry-run", "--quiet", "rules")
FLOOR_SNAKEFILE = """\
rule all:
    input: expand("out/{{i}}.txt", i=range({jobs}))

rule make:
    output: "out/{{i}}.txt"
    shell: "touch {{output}}"
"""


def snakemake(workdir: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "snakemake", *args]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {workdir}:\n{proc.stdout}{proc.stderr}")
    return proc.stdout + proc.stderr


def job_count(output: str) -> int:
    """The 'total' row of Snakemake's job stats."""
    return int(re.search(r"^total\s+(\d+)$", output, re.M).group(1))


def prepare(root: Path) -> tuple[Path, Path, int]:
    """``root``/workflow (a copy of this checkout's workflow) and ``root``/floor (the trivial Snakefile)."""
    work, floor = root / "workflow", root / "floor"
    work.mkdir(parents=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, work / name)
    jobs = job_count(snakemake(work, *DRY_RUN, "--config", "scale=full"))
    floor.mkdir()
    (floor / "Snakefile").write_text(FLOOR_SNAKEFILE.format(jobs=jobs - 1))  # + rule all
    assert job_count(snakemake(floor, *DRY_RUN)) == jobs
    return work, floor, jobs


def seconds(workdir: Path, *args: str) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one dry run; CPU time (user + sys) holds up better on a busy machine."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", *DRY_RUN, *args], cwd=workdir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"the dry run in {workdir} failed: run it there to see why")
    return usage.ru_utime + usage.ru_stime, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="timed runs of each (after one warm-up each)")
    p.add_argument("--keep", type=Path, help="build the two folders here and keep them")
    args = p.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="dryrun-"))
    try:
        work, floor, jobs = prepare(root)
        print(f"jobs: {jobs} in each; workflow: {work}; floor: {floor}")
        seconds(work, "--config", "scale=full"), seconds(floor)
        pairs = []
        for i in range(args.runs):
            pairs.append((seconds(work, "--config", "scale=full"), seconds(floor)))
            (a_cpu, a_wall), (b_cpu, b_wall) = pairs[-1]
            print(f"run {i + 1}: workflow {a_cpu:.2f} s CPU ({a_wall:.2f} s wall), floor {b_cpu:.2f} s CPU "
                  f"({b_wall:.2f} s wall)")  # fmt: skip
        for k, what in enumerate(("CPU", "wall")):
            ratio = statistics.median(a[k] / b[k] for a, b in pairs)
            print(f"median {what}: workflow {statistics.median(a[k] for a, _ in pairs):.2f} s, "
                  f"floor {statistics.median(b[k] for _, b in pairs):.2f} s, ratio {ratio:.2f} "
                  "(goal <= 1.5)")  # fmt: skip
    finally:
        if args.keep is None:
            shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
