"""Faults on a real tiny run (2 variants x 1 task) with the shipped default profile: deleted, corrupt and failing run
files, a second Snakemake call during a run, and `kill -9` of Snakemake. Each failure's cause is checked among the
console's last lines."""

import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from .helpers import REPO, copy_workflow, env, last_lines, planned_jobs, snakemake, write_config

VARIANTS = ["delta_net_4layer", "gated_delta_net_4layer"]
TASK = "memorization"
RUN = f"results/tiny/runs/{VARIANTS[0]}/{TASK}.parquet"
TINY_LR = yaml.safe_load((REPO / "config.yaml").read_text())["scales"]["tiny"]["optim"]["lrs"][0]
OTHER_LR = 1.0e-4  # the lr of a dry run and of a second, refused Snakemake call
assert OTHER_LR != TINY_LR

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("faults"), profiles=True)
    config = write_config(workdir, scale="tiny", variants=VARIANTS, tasks=[TASK])
    assert config["scales"]["tiny"]["optim"]["lrs"] == [TINY_LR]
    snakemake(workdir, "--cores", "1")
    return workdir


@pytest.fixture
def heal(workdir):
    """Leave the run complete and up to date for the next test."""
    yield workdir
    snakemake(workdir, "--cores", "1")


def results_state(workdir):
    """Every file under results/ with its size and mtime."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in (workdir / "results").rglob("*") if p.is_file()}


def start_snakemake(workdir, *args, log):
    """Snakemake in the background (its own process group), printing to ``log``."""
    out = open(log, "w")
    return subprocess.Popen([sys.executable, "-m", "snakemake", *args], cwd=workdir, env=env(), stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def wait_for(path, text, timeout=120):
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        assert time.monotonic() < deadline, f"no {text!r} in {path}:\n{path.read_text()}"
        time.sleep(0.2)


def test_a_deleted_run_file_is_rebuilt(heal):
    workdir = heal
    (workdir / RUN).unlink()
    plan = snakemake(workdir, "--dry-run").output
    assert ("train", f"scale=tiny, variant={VARIANTS[0]}, task={TASK}") in planned_jobs(plan), plan
    snakemake(workdir, "--cores", "1")
    assert len(pd.read_parquet(workdir / RUN)) >= 1


def test_a_corrupt_run_file_is_named_with_the_command_that_rebuilds_it(heal):
    workdir = heal
    (workdir / RUN).write_bytes(b"not a parquet file")
    run = snakemake(workdir, "--cores", "1", check=False)
    assert run.returncode == 1
    tail = last_lines(run.output)
    assert f"deltanet-repro: aggregate (scale=tiny) failed: deltanet aggregate: error: {RUN}: not a readable" in tail
    assert tail.count(f"; rebuild it with: rm -f {RUN} && snakemake --cores all") == 1, run.output
    subprocess.run(["rm", "-f", RUN], cwd=workdir, check=True)
    snakemake(workdir, "--cores", "1")
    assert len(pd.read_parquet(workdir / RUN)) >= 1


FAILING_VARIANT = '''"""Fails in its loop on purpose (tests/workflow/test_faults.py).

The baseline's contract with a loop body that raises.
"""

MIXER = "delta"
CHUNK_DEPENDENT = False
USES_KERNEL = False


def loop_body(chunk, carry, params):
    raise RuntimeError("loop body fails on purpose")
'''


def test_a_failing_job_shows_its_cause_in_the_last_lines(heal):
    workdir = heal
    name = "delta_net_4layer_fails_in_for_loop"
    path = workdir / "deltanet" / "variants" / f"{name}.py"
    path.write_text(FAILING_VARIANT)
    try:
        # the train job alone: with every target, the identities check (which runs every variant) may fail first
        run = snakemake(workdir, f"results/tiny/runs/{name}/{TASK}.parquet", "--cores", "1", "--config",
                        f"variants=[{name}]", check=False)  # fmt: skip
    finally:
        path.unlink()
    assert run.returncode == 1
    cause = "deltanet train: error: RuntimeError: loop body fails on purpose"
    assert f"deltanet-repro: train (scale=tiny, variant={name}, task={TASK}) failed: {cause}" in last_lines(run.output)
    assert f"Logfile results/tiny/logs/train/{name}/{TASK}.log:" in run.output  # the profile shows the whole log


def test_failed_kernel_checks_show_their_headline_in_the_last_lines(tmp_path):
    """verify-kernels ends with an indented list of failed checks: the console names the headline above it."""
    workdir = copy_workflow(tmp_path / "wf", profiles=True)
    write_config(workdir, variants=VARIANTS[:1], tasks=[TASK])
    rule = workdir / "workflow" / "rules" / "kernels.smk"  # the copy's check runs a deliberately wrong kernel
    rule.write_text(rule.read_text().replace("python -m deltanet verify-kernels", "python -m deltanet verify-kernels "
                                             "--inject-fault drop_state_update"))  # fmt: skip
    run = snakemake(workdir, "--cores", "1", check=False)
    assert run.returncode == 1
    assert re.search(r"deltanet-repro: verify_kernels \(scale=tiny\) failed: verify-kernels: \d+ of \d+ checks FAILED",
                     last_lines(run.output)), run.output  # fmt: skip
    assert "rule train:" not in run.output


def test_a_dry_run_with_other_settings_writes_nothing(workdir, tmp_path):
    """Nothing a job reads changes under it: a dry run (and a run refused by the lock, below) writes no file."""
    before = results_state(workdir)
    other = tmp_path / "lr.yaml"
    other.write_text(f"scales: {{tiny: {{optim: {{lrs: [{OTHER_LR}]}}}}}}\n")
    snakemake(workdir, "--dry-run", "--configfile", str(other))
    assert results_state(workdir) == before


def test_a_second_call_cannot_change_the_settings_of_a_running_one(workdir, tmp_path):
    """The issue's reproduction: while the first train job runs, a second call with another lr is refused by the
    lock; the pending second job must still train at the first call's lr."""
    other = tmp_path / "lr.yaml"
    other.write_text(f"scales: {{tiny: {{optim: {{lrs: [{OTHER_LR}]}}}}}}\n")
    log = tmp_path / "first.log"
    first = start_snakemake(workdir, "--cores", "1", "--forcerun", "train", log=log)
    try:
        wait_for(log, "rule train:")
        second = snakemake(workdir, "--cores", "1", "--configfile", str(other), check=False)
        assert first.poll() is None, "the first call ended before the second: the test proves nothing"
        assert second.returncode == 1
        assert "It can be removed with the --unlock argument." in last_lines(second.output)
        assert first.wait(timeout=600) == 0, log.read_text()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    for variant in VARIANTS:
        runs = pd.read_parquet(workdir / f"results/tiny/runs/{variant}/{TASK}.parquet")
        assert set(runs["lr"]) == {TINY_LR}, variant


def test_kill_9_of_snakemake_then_unlock_and_rerun_recovers(workdir, tmp_path):
    """The lock a killed Snakemake leaves names its one command; the profile then redoes the killed job."""
    log = tmp_path / "killed.log"
    first = start_snakemake(workdir, "--cores", "1", "--forcerun", "train", log=log)
    wait_for(log, "rule train:")
    time.sleep(1)
    os.killpg(first.pid, signal.SIGKILL)  # Snakemake and its running job, as a crash would
    first.wait()
    locked = snakemake(workdir, "--cores", "1", check=False)
    assert locked.returncode == 1
    assert "It can be removed with the --unlock argument." in last_lines(locked.output)
    assert "LockException:" in locked.output.splitlines()  # the word the README's "What a bad input gets" row quotes
    snakemake(workdir, "--unlock")
    run = snakemake(workdir, "--cores", "1")  # no --rerun-incomplete needed: profiles/default sets it
    assert "rule train:" in run.output
    assert snakemake(workdir, "--dry-run").output.count("Nothing to be done") == 1


@pytest.mark.parametrize(
    "blocked, message",
    [
        ("results", "results exists but is not a directory: move it away"),
        ("results/configs", "(File exists): results/ must be a writable directory"),
    ],
)
def test_an_unwritable_results_folder_fails_in_one_line(tmp_path, blocked, message):
    """A file where results/ (or the folder of the job configs) should be: one line, no traceback, no job."""
    workdir = copy_workflow(tmp_path / "wf")
    write_config(workdir, variants=VARIANTS[:1], tasks=[TASK])
    (workdir / blocked).parent.mkdir(exist_ok=True)
    (workdir / blocked).write_text("a file where a folder should be\n")
    runs = [snakemake(workdir, "--cores", "1", check=False)]
    if blocked == "results":  # Snakemake cannot even plan; the folder of the job configs is written by real runs only
        runs.append(snakemake(workdir, "--dry-run", check=False))
    for run in runs:
        assert run.returncode == 1
        assert message in last_lines(run.output), run.output
        assert "Traceback" not in run.output and "rule verify_kernels" not in run.output
