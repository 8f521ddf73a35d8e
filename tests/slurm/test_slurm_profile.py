"""profiles/slurm against a real single-node SLURM (Debian slurm-wlm + munge, started and stopped by the test).

The slow test copies the repository, fills in the profile's site placeholders (partition, account) and the two
status-polling latencies, runs the workflow on 2 variants x 2 tasks at the tiny scale (cut to one short epoch),
and then reads the jobs back from slurmctld (MinJobAge keeps finished jobs): every train job asked for a GPU, the
injected one-time failure was resubmitted and succeeded, the light rules never reached SLURM, the outputs are
complete, and the teardown left none of the test's SLURM processes behind (and no other process was touched).

It needs root (daemons, apt-get install of slurm-wlm/munge when missing) and is skipped with the reason
otherwise. Run it alone: `python -m pytest tests/slurm -ra -s -n 0` (-s -n 0 prints the measured timings).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slurm_cluster import PARTITION, SlurmCluster, ensure_installed, unavailable_reason  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
# What a user's checkout needs to run the workflow (no results/, .snakemake/, .venv/).
WORKFLOW_FILES = (
    "Snakefile", "config.yaml", "pyproject.toml", "Dockerfile", "requirements", "workflow", "deltanet", "profiles"
)

# 2 variants x 2 tasks at the tiny scale; the two fastest tiny tasks.
VARIANTS = ("delta_net_4layer", "gated_delta_net_4layer")
TASKS = ("memorization", "compression")
FLAKY = ("gated_delta_net_4layer", "memorization")  # its train job fails once, then must be retried
SITE = {"slurm_partition": PARTITION, "slurm_account": "ci"}
# The plugin polls after slurm-init-seconds-before-status-checks, then backs off by +10 s per round with no
# finished job; 1 s keeps a tiny job's turnaround near 12 s instead of 40+ s.
LATENCY = {"slurm-init-seconds-before-status-checks": 1, "seconds-between-status-checks": 2}


def site_profile(dst: Path) -> dict:
    """The user profile with what a user must edit filled in, plus faster polling; nothing else changes."""
    profile = yaml.safe_load(PROFILE.read_text())
    profile["default-resources"].update(SITE)
    profile.update(LATENCY)
    dst.mkdir(parents=True)
    (dst / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return profile


def python_shim(bindir: Path, marker: Path) -> None:
    """`python` for the jobs: fails `python -m deltanet train` of FLAKY once (marker = it happened), else the venv's.

    A test-only wrapper on PATH (sbatch --export=ALL carries PATH to the job), so the product has no failure hook.
    """
    variant, task = FLAKY
    bindir.mkdir(parents=True, exist_ok=True)
    shim = bindir / "python"
    shim.write_text(
        f"""#!/bin/sh
case " $* " in
  *" -m deltanet train "*"--variant {variant} "*)
    case " $* " in *" --task {task} "*)
      if mkdir "{marker}" 2>/dev/null; then
        echo "tests/slurm: injected one-time failure of train {variant} {task}" >&2
        exit 1
      fi;;
    esac;;
esac
exec "{sys.executable}" "$@"
"""
    )
    shim.chmod(0o755)


def copy_repo(dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dst / name)
    config = yaml.safe_load((dst / "config.yaml").read_text())
    config.update(scale="tiny", variants=list(VARIANTS), tasks=list(TASKS))
    # what SLURM is asked and does is the test, not what the jobs learn: one epoch of 4 steps each
    tiny = config["scales"]["tiny"]
    tiny["optim"]["max_epochs"] = 1
    for task in TASKS:
        tiny["task_overrides"][task].update(num_train_examples=64, num_test_examples=32)
    (dst / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return dst


def process_snapshot(names=("munged", "slurmctld", "slurmd", "slurmstepd")) -> set[int]:
    """PIDs of SLURM/munge processes that are not ours (must survive the test untouched)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if comm in names:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_profile_keys_are_snakemake_options():
    """Every profile key is one of snakemake 9's options (plugin options included), and the GPU requests are there."""
    profile = yaml.safe_load(PROFILE.read_text())
    helptext = subprocess.run(
        [sys.executable, "-m", "snakemake", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for key in profile:
        assert f"--{key}" in helptext, f"profiles/slurm: {key!r} is not a snakemake option"
    assert profile["executor"] == "slurm"
    assert profile["slurm-status-command"] == "squeue"
    assert profile["apptainer-args"] == "--nv"
    assert profile["set-resources"]["train"]["gpu"] == 1
    assert profile["set-resources"]["verify_kernels"]["gpu"] == 1
    # cpus_per_task, where set, wins over cpus_per_gpu in the plugin: it must not be a default
    assert "cpus_per_task" not in profile["default-resources"]
    assert profile["default-resources"]["slurm_partition"].startswith("<")  # a placeholder, not a site's name


def dry_run_resources(work: Path, scale: str) -> dict[str, dict[str, str]]:
    """rule -> the resources Snakemake resolves for its first job, from a dry run through the unedited profile."""
    cmd = [sys.executable, "-m", "snakemake", "--profile", str(PROFILE.parent), "-n", "--config", f"scale={scale}"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found, rule = {}, None
    for line in proc.stdout.splitlines():
        if line.startswith(("rule ", "localrule ")) and line.endswith(":"):
            rule = line.split()[1].rstrip(":")
        elif line.strip().startswith("resources:") and rule and rule not in found:
            found[rule] = dict(kv.split("=", 1) for kv in line.split(":", 1)[1].strip().split(", "))
    return found


@pytest.mark.parametrize("scale", ["tiny", "full"])
def test_profile_requests_per_rule(tmp_path, scale):
    """What each rule asks SLURM for, per scale: the profile's GPU request wins, memory/time follow the scale."""
    resources = dry_run_resources(copy_repo(tmp_path / "repo"), scale)
    config = yaml.safe_load((REPO / "config.yaml").read_text())["scales"][scale]["resources"]
    for rule, cpus in (("train", "4"), ("verify_kernels", "2")):
        res = resources[rule]
        assert res["gpu"] == "1" and res["cpus_per_gpu"] == cpus, (rule, res)
        assert res["mem_mb"] == str(config["mem_mb"]), (rule, res)
        assert res["slurm_partition"] == "<partition>", (rule, res)
        assert "cpus_per_task" not in res, (rule, res)
    assert resources["train"]["runtime"] == str(config["runtime_min"])
    for rule in ("aggregate", "report"):
        assert "gpu" not in resources[rule], (rule, resources[rule])


@pytest.mark.slow
def test_workflow_through_slurm_profile(tmp_path, request):
    reason = unavailable_reason() or ensure_installed()
    if reason:
        pytest.skip(f"SLURM integration test cannot run here: {reason}")

    work = copy_repo(tmp_path / "repo")
    profile = site_profile(tmp_path / "profile")
    marker = tmp_path / "flaky-failed-once"
    python_shim(tmp_path / "shim", marker)
    others = process_snapshot()

    t0 = time.monotonic()
    cluster = SlurmCluster()
    request.addfinalizer(cluster.cleanup)  # its directory (config, spool, logs) goes, pass or fail
    with cluster:
        bringup_s = cluster.bringup_s
        env = cluster.env
        env.pop("PYTHONPATH", None)  # jobs import the copy's package (cwd), not this checkout's
        env["PATH"] = os.pathsep.join([str(tmp_path / "shim"), str(Path(sys.executable).parent), env["PATH"]])
        cmd = [sys.executable, "-m", "snakemake", "--profile", str(tmp_path / "profile")]
        t1 = time.monotonic()
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=420)
        workflow_s = time.monotonic() - t1
        out = proc.stdout + proc.stderr
        (tmp_path / "snakemake.log").write_text(out)
        jobs = cluster.jobs()
        daemons = cluster.pids()
        diag = f"\n--- snakemake (rc {proc.returncode}) ---\n{out[-8000:]}\n--- slurm ---\n{cluster.logs()[-4000:]}"
        assert proc.returncode == 0, diag
    total_s = time.monotonic() - t0

    # teardown: our daemons and job processes are gone, processes we did not start are untouched
    assert cluster.stopped(), f"left running: {cluster.job_processes()} {daemons}"
    assert not any(alive(pid) for pid in daemons.values()), daemons
    survivors = {pid for pid in others if alive(pid)}
    assert survivors == others, f"the teardown touched processes it did not start: {others - survivors}"

    # the job records, as slurmctld kept them (Comment = rule_<rule>[_wildcards_<values>])
    by_rule: dict[str, list[dict]] = {}
    for job in jobs:
        rule = job["Comment"].removeprefix("rule_").split("_wildcards_")[0]
        by_rule.setdefault(rule, []).append(job)
    summary = {r: [(j["JobId"], j["Comment"], j["JobState"]) for j in js] for r, js in by_rule.items()}
    assert set(by_rule) == {"verify_kernels", "train"}, (
        f"only the GPU rules may reach SLURM; aggregate and report must be local rules of the workflow "
        f"(`localrules: aggregate, report` or `localrule: True`): {summary}"
    )

    for job in by_rule["train"] + by_rule["verify_kernels"]:
        # sbatch --gpus=1 is recorded as TresPerJob=gres:gpu:1 (a --gres request would be TresPerNode)
        assert job["TresPerJob"] == "gres:gpu:1", job
        assert job["Partition"] == PARTITION and job["Account"] == SITE["slurm_account"], job
        assert job["NumNodes"] == "1", job
    cpus_per_gpu = profile["set-resources"]["train"]["cpus_per_gpu"]
    for job in by_rule["train"]:
        assert job["CpusPerTres"] == f"gres:gpu:{cpus_per_gpu}", job
        assert job["NumCPUs"] == str(cpus_per_gpu), job

    final = {}
    for job in sorted(by_rule["train"], key=lambda j: int(j["JobId"])):
        final.setdefault(job["Comment"], []).append(job["JobState"])
    # wildcard values in the order of the output path results/{scale}/runs/{variant}/{task}.parquet
    expected = {f"rule_train_wildcards_tiny_{v}_{t}" for v in VARIANTS for t in TASKS}
    assert set(final) == expected, summary
    flaky = "rule_train_wildcards_tiny_{}_{}".format(*FLAKY)
    assert marker.is_dir(), "the one-time failure was never injected"
    assert final[flaky] == ["FAILED", "COMPLETED"], f"{flaky}: {final[flaky]} (retries: {profile['retries']})"
    assert all(states == ["COMPLETED"] for name, states in final.items() if name != flaky), final
    assert "Trying to restart job" in out
    assert len(by_rule["verify_kernels"]) == 1 and by_rule["verify_kernels"][0]["JobState"] == "COMPLETED"

    # outputs
    import pandas as pd

    from deltanet.tasks import DISPLAY_NAMES

    results = work / "results" / "tiny"
    acc = pd.read_csv(results / "accuracies.csv").set_index("variant")
    assert sorted(acc.index) == sorted(VARIANTS), acc
    for v in VARIANTS:
        for t in TASKS:
            runs = pd.read_parquet(results / "runs" / v / f"{t}.parquet")
            assert len(runs) > 0 and set(runs["variant"]) == {v} and set(runs["task"]) == {t}, (v, t)
            assert set(runs["scale"]) == {"tiny"}, (v, t)
            # tiny = one setting, one lr x wd, one seed: the table's score is that run's test accuracy
            assert acc.loc[v, DISPLAY_NAMES[t]] == pytest.approx(runs["test_acc"].max(), abs=1e-5), (v, t, acc)
    other = [DISPLAY_NAMES[t] for t in DISPLAY_NAMES if t not in TASKS]
    assert acc[other].isna().all().all(), acc
    assert (results / "report.html").stat().st_size > 0
    assert not (work / ".snakemake" / "incomplete").exists() or not any((work / ".snakemake" / "incomplete").iterdir())

    # measured figures
    def seconds(job, a, b):
        fmt = "%Y-%m-%dT%H:%M:%S"
        return time.mktime(time.strptime(job[b], fmt)) - time.mktime(time.strptime(job[a], fmt))

    ok = [j for j in jobs if j["JobState"] == "COMPLETED"]
    figures = {
        "bringup_s": round(bringup_s, 2),
        "workflow_s": round(workflow_s, 1),
        "total_s": round(total_s, 1),
        "slurm_jobs": len(jobs),
        "job_run_s_mean": round(sum(seconds(j, "StartTime", "EndTime") for j in ok) / len(ok), 1),
        "job_queue_s_mean": round(sum(seconds(j, "SubmitTime", "StartTime") for j in ok) / len(ok), 1),
    }
    print("\nslurm test figures:", json.dumps(figures))
