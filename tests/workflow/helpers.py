"""Run Snakemake on a throwaway copy of the workflow and read its own job summaries."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
# What a user's checkout needs to run the workflow (results/ and .snakemake/ state stay behind).
WORKFLOW_FILES = ("Snakefile", "config.yaml", "pyproject.toml", "Dockerfile", "requirements", "workflow", "deltanet")


def copy_workflow(dst: Path, profiles: bool = False) -> Path:
    """Copy what a checkout needs to run; with ``profiles`` also profiles/ (then profiles/default applies)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES + (("profiles",) if profiles else ()):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst / name)
    return dst


def env(extra_path: Path | None = None, changes: dict[str, str | None] | None = None) -> dict[str, str]:
    """This interpreter's bin first (jobs call `python`), and no PYTHONPATH: jobs must import the copy's package.

    ``changes`` sets variables, or removes those given as None.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for key, value in (changes or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    path = [str(Path(sys.executable).parent), env.get("PATH", "")]
    if extra_path is not None:
        path.insert(0, str(extra_path))
    env["PATH"] = os.pathsep.join(path)
    return env


def snakemake(workdir: Path, *args: str, extra_path: Path | None = None, check: bool = True, timeout: int = 600,
              env_changes: dict[str, str | None] | None = None):
    """Run Snakemake in ``workdir``; ``env_changes`` as in :func:`env`."""
    cmd = [sys.executable, "-m", "snakemake", *args]
    proc = subprocess.run(cmd, cwd=workdir, env=env(extra_path, env_changes), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    proc.output = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.output[-6000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """The per-rule counts of Snakemake's 'Job stats' table (first one printed); {} when nothing is to be done."""
    lines = output.splitlines()
    if "Job stats:" not in lines:
        return {}
    counts = {}
    for line in lines[lines.index("Job stats:") + 3 :]:
        name, count = line.split()
        if name == "total":
            assert int(count) == sum(counts.values()), output
            return counts
        counts[name] = int(count)
    raise AssertionError(f"unterminated Job stats table:\n{output}")


def planned_jobs(output: str) -> Counter:
    """(rule, wildcards) of every job a dry-run lists, e.g. ('train', 'scale=tiny, variant=v, task=t')."""
    jobs: Counter = Counter()
    rule = None
    for line in output.splitlines():
        if match := re.match(r"^(?:local)?rule (\w+):$", line):
            rule = match.group(1)
            jobs[(rule, "")] += 1
        elif rule and (match := re.match(r"^\s+wildcards: (.*)$", line)):
            jobs[(rule, "")] -= 1
            jobs[(rule, match.group(1))] += 1
    return +jobs


def write_config(workdir: Path, **changes) -> dict:
    """Update the copy's config.yaml (top-level keys) and return the new config."""
    path = workdir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config.update(changes)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return config


def last_lines(output: str, n: int = 5) -> str:
    """The last ``n`` non-blank lines of a console output: where a failure's cause must be."""
    return "\n".join([line for line in output.splitlines() if line.strip()][-n:])


NOTHING_TO_DO = "Nothing to be done"
