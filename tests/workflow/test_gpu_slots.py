"""GPU slots on one machine, without a GPU: a stand-in `nvidia-smi` lists N GPUs, and real processes take the slots.

Three levels: `deltanet gpu-slot` processes started by hand (distinct slots, the limit, a kill -9'd job's slot
coming back); the plan from `nvidia-smi -L` and CUDA_VISIBLE_DEVICES (and the errors); Snakemake runs of the
workflow whose train/verify-kernels commands are replaced by a stand-in `python` that records what the job saw.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deltanet import machine
from deltanet import gpu_slots
from deltanet.gpu_slots import SlotError, SlotPlan, check_lock_dir, plan_slots

from .helpers import copy_workflow, env, last_lines, planned_jobs, snakemake, write_config
from .test_container import STUB as APPTAINER_STUB

# one worker: the workflow tests share one copy of the workflow
pytestmark = pytest.mark.xdist_group("gpu_slots")
H100 = "NVIDIA H100 80GB HBM3"


def nvidia_smi(bin_dir: Path, n: int = 3, name: str = H100, script: str | None = None) -> Path:
    """A stand-in `nvidia-smi` in ``bin_dir`` answering `-L` with ``n`` GPUs, or running ``script``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    lines = "".join(f'echo "GPU {i}: {name} (UUID: GPU-{i}{i}{i}{i}aaaa-0000)"\n' for i in range(n))
    path = bin_dir / "nvidia-smi"
    path.write_text("#!/bin/sh\n" + (script or lines))
    path.chmod(0o755)
    return bin_dir


# --- deltanet gpu-slot, started by hand -------------------------------------------------------------------------

# Records (CUDA_VISIBLE_DEVICES, start, end) of one job; the slot is held while it runs. It waits (up to 120 s) until
# argv[3] jobs have started, so that a slow start of the others on a busy machine cannot hide a missing slot.
JOB = """
import glob, json, os, sys, time
start = time.time()
open(sys.argv[1] + ".started", "w").close()
while len(glob.glob(os.path.join(os.path.dirname(sys.argv[1]), "*.started"))) < int(sys.argv[3]):
    if time.time() > start + 120:
        break
    time.sleep(0.05)
time.sleep(float(sys.argv[2]))
with open(sys.argv[1], "w") as f:
    json.dump({"gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "order": os.environ.get("CUDA_DEVICE_ORDER"),
               "start": start, "end": time.time()}, f)
"""


def start_in_slot(plan: SlotPlan, record: Path, seconds: float, gpus: int = 1, env_extra=None,
                  together: int = 1) -> subprocess.Popen:  # fmt: skip
    env = {**os.environ, **(env_extra or {})}
    cmd = [sys.executable, "-m", "deltanet", "gpu-slot", "--gpus", str(gpus),
           *(["--plan", plan.to_json()] if plan else []), "--",
           sys.executable, "-c", JOB, str(record), str(seconds), str(together)]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def most_at_once(intervals) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, step in events:  # an end sorts before a start at the same instant
        running += step
        peak = max(peak, running)
    return peak


def test_concurrent_jobs_get_distinct_slots_and_never_more_than_allowed(tmp_path):
    plan = SlotPlan(((0, "GPU-0000", H100), (2, "GPU-2222", H100)), 2, None, str(tmp_path / "slots"))
    procs = [start_in_slot(plan, tmp_path / f"job{i}.json", 1, together=4) for i in range(7)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]  # hang guards only: generous on a slow machine
    assert all(p.returncode == 0 for p in procs), outputs
    jobs = [json.loads((tmp_path / f"job{i}.json").read_text()) for i in range(7)]
    assert {job["gpu"] for job in jobs} == {"0", "2"}
    assert most_at_once([(j["start"], j["end"]) for j in jobs]) == 4  # 2 GPUs x 2 jobs per GPU
    for gpu in ("0", "2"):
        assert most_at_once([(j["start"], j["end"]) for j in jobs if j["gpu"] == gpu]) <= 2
    assert any("waiting for one" in out for out in outputs)
    assert all(f"CUDA_VISIBLE_DEVICES={job['gpu']}" in out for job, out in zip(jobs, outputs))


def test_a_killed_jobs_slot_comes_back(tmp_path):
    plan = SlotPlan(((1, "GPU-1111", H100),), 1, None, str(tmp_path / "slots"))
    holder = start_in_slot(plan, tmp_path / "holder.json", 600)
    deadline = time.time() + 300
    while not (tmp_path / "holder.json.started").exists():
        assert time.time() < deadline and holder.poll() is None
        time.sleep(0.1)
    waiter = start_in_slot(plan, tmp_path / "waiter.json", 0)
    time.sleep(2)
    assert waiter.poll() is None and not (tmp_path / "waiter.json.started").exists()  # the only slot is held
    os.kill(holder.pid, signal.SIGKILL)  # the job itself: gpu-slot exec'd it, so it holds the lock
    holder.wait(timeout=300)
    out = waiter.communicate(timeout=300)[0]
    assert waiter.returncode == 0, out
    assert json.loads((tmp_path / "waiter.json").read_text())["gpu"] == "1"


def test_a_gpu_named_by_index_and_by_uuid_is_one_slot(tmp_path, restore_path):
    """Two runs on one machine, one naming GPU 1 by index and one by UUID: their jobs wait for each other."""
    gpus, locks = listed(tmp_path), str(tmp_path / "locks")
    by_index, by_uuid = plan_slots(gpus, 1, "1", locks), plan_slots(gpus, 1, "GPU-1111", locks)
    jobs = [start_in_slot(plan, tmp_path / f"job{i}.json", 1, together=1) for i, plan in enumerate([by_index, by_uuid])]
    outputs = [p.communicate(timeout=300)[0] for p in jobs]
    records = [json.loads((tmp_path / f"job{i}.json").read_text()) for i in range(2)]
    assert [r["gpu"] for r in records] == ["1", "1"] and {r["order"] for r in records} == {"PCI_BUS_ID"}, outputs
    assert most_at_once([(r["start"], r["end"]) for r in records]) == 1


def test_a_lock_folder_without_flock_is_one_line(tmp_path, monkeypatch):
    """Some network file systems do not take flock (ENOSYS, ENOLCK): the plan refuses with one line, before a job."""
    def no_flock(fd, operation):
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(gpu_slots.fcntl, "flock", no_flock)
    with pytest.raises(SlotError) as err:
        check_lock_dir(str(tmp_path / "lustre"))
    assert str(err.value) == (f"GPU slot locks cannot be taken in {tmp_path / 'lustre'} (Function not implemented): "
                              "set gpu_lock_dir in config.yaml to a folder on a local file system every run on this "
                              "machine sees")  # fmt: skip


@pytest.mark.parametrize("gpus, plan_given, expected", [
    (0, True, "7"),   # a CPU job keeps whatever it had
    (1, False, "7"),  # a cluster job: no plan, the scheduler's CUDA_VISIBLE_DEVICES stays
])  # fmt: skip
def test_jobs_without_a_slot_run_as_they_are(tmp_path, gpus, plan_given, expected):
    plan = SlotPlan(((0, "GPU-0000", H100),), 1, None, str(tmp_path / "slots")) if plan_given else None
    proc = start_in_slot(plan, tmp_path / "job.json", 0, gpus=gpus, env_extra={"CUDA_VISIBLE_DEVICES": "7"})
    assert proc.wait(timeout=300) == 0
    assert json.loads((tmp_path / "job.json").read_text())["gpu"] == expected
    assert not (tmp_path / "slots").exists()


# --- the plan ---------------------------------------------------------------------------------------------------


def listed(tmp_path, n=3):
    os.environ["PATH"] = f"{nvidia_smi(tmp_path / 'bin', n)}{os.pathsep}{os.environ['PATH']}"
    return machine.nvidia_gpus()


@pytest.fixture
def restore_path():
    path = os.environ["PATH"]
    yield
    os.environ["PATH"] = path


def test_nvidia_smi_gpus_and_the_users_cuda_visible_devices(tmp_path, restore_path):
    gpus = listed(tmp_path)
    assert [(g.index, g.name) for g in gpus] == [(0, H100), (1, H100), (2, H100)]
    uuid = {i: f"GPU-{i}{i}{i}{i}aaaa-0000" for i in range(3)}
    d = str(tmp_path / "locks")
    assert plan_slots(gpus, 1, None, d).gpus == tuple((i, uuid[i], H100) for i in range(3))
    assert plan_slots(gpus, 2, "2,0", d).slots == [(2, uuid[2], H100), (0, uuid[0], H100)] * 2
    assert plan_slots(gpus, 1, "GPU-1111", d).gpus == ((1, uuid[1], H100),)  # a UUID prefix, as CUDA takes it
    with pytest.raises(SlotError, match="names GPU 1 twice"):  # by UUID and by index: one GPU
        plan_slots(gpus, 1, "GPU-1111,1", d)


@pytest.mark.parametrize("visible, message", [
    ("0,5", "CUDA_VISIBLE_DEVICES=0,5 names GPU 5, which nvidia-smi -L does not list (it lists 0, 1, 2"),
    ("1,1", "CUDA_VISIBLE_DEVICES=1,1 names GPU 1 twice"),
    ("", "CUDA_VISIBLE_DEVICES='' hides every GPU"),
])  # fmt: skip
def test_a_cuda_visible_devices_naming_no_listed_gpu_is_refused(tmp_path, restore_path, visible, message):
    with pytest.raises(SlotError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        plan_slots(listed(tmp_path), 1, visible, str(tmp_path / "locks"))


@pytest.mark.parametrize("script, message", [
    ("echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.' >&2; exit 9\n",
     "nvidia-smi -L failed (exit 9: NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.)"),
    ("sleep 30\n", "nvidia-smi -L did not answer within 1 s (a hung driver?)"),
    ("echo 'No devices were found'\n", "nvidia-smi -L listed no GPU (No devices were found)"),
])  # fmt: skip
def test_a_failing_or_hanging_nvidia_smi_is_one_line(tmp_path, restore_path, monkeypatch, script, message):
    monkeypatch.setattr(machine, "NVIDIA_SMI_TIMEOUT_S", 1)
    os.environ["PATH"] = f"{nvidia_smi(tmp_path / 'bin', script=script)}{os.pathsep}{os.environ['PATH']}"
    with pytest.raises(machine.NvidiaSmiError) as err:
        machine.nvidia_gpus()
    assert str(err.value) == message
    assert machine.nvidia_gpu_visible() is False  # the scale's auto choice then picks the CPU


# --- the workflow -----------------------------------------------------------------------------------------------

# `python -m deltanet train|verify-kernels ...` records what the job saw, sleeps and writes its outputs; every other
# call (Snakemake's, `deltanet gpu-slot`) is the real interpreter.
PYTHON_STUB = """#!/bin/sh
case "$1 $2 $3" in
    "-m deltanet train"|"-m deltanet verify-kernels") exec {python} {job} "$@" ;;
esac
exec {python} "$@"
"""
STUB_JOB = """
import json, os, sys, time
args = sys.argv[1:]
start = time.time()
time.sleep(1.0)
outs = [args[i + 1] for i, a in enumerate(args) if a in ("--out", "--summary")]
for out in outs:
    os.makedirs(os.path.dirname(out), exist_ok=True)
    open(out, "w").close()
with open(os.environ["STUB_RECORD"], "a") as f:
    f.write(json.dumps({"job": args[2], "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start,
                        "order": os.environ.get("CUDA_DEVICE_ORDER"),
                        "end": time.time()}) + "\\n")
"""
TASKS = ["compression", "context_recall", "fuzzy_recall", "memorization", "noisy_recall"]
TARGETS = [f"results/smoke/runs/delta_net_4layer/{task}.parquet" for task in TASKS]


# Apptainer's --cleanenv, as the stub's exec does it: the job starts with PATH and the APPTAINERENV_ variables only
CLEANENV = (
    ("        shift\n        while [[ $# -gt 0 && \"$1\" != *.sif ]]; do shift; done\n",
     "        shift\n        [[ \" $* \" == *\" --cleanenv \"* ]] && clean=1\n"
     "        while [[ $# -gt 0 && \"$1\" != *.sif ]]; do shift; done\n"),
    ('        exec "$@" ;;',
     '        [[ -n $clean ]] && exec env -i PATH="$PATH" $(env | sed -n "s/^APPTAINERENV_//p") "$@"\n'
     '        exec "$@" ;;'),
)


def machine_wide_locks(tmp_path_factory) -> str:
    """The stand-in machine's lock folder (the default, /tmp/deltanet-gpu-slots, is the real machine's)."""
    return str(tmp_path_factory.getbasetemp() / "machine-gpu-locks")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("gpu-slots"))
    write_config(workdir, variants=["delta_net_4layer"], gpu_lock_dir=machine_wide_locks(tmp_path_factory))
    return workdir


@pytest.fixture(scope="module")
def fake_machine(tmp_path_factory):
    """A bin folder: `nvidia-smi` with 3 GPUs, the stand-in `python`, and the stub `apptainer` (with --cleanenv)."""
    bin_dir = nvidia_smi(tmp_path_factory.mktemp("fake-machine"), 3)
    (bin_dir / "job.py").write_text(STUB_JOB)
    (bin_dir / "python").write_text(PYTHON_STUB.format(python=sys.executable, job=bin_dir / "job.py"))
    stub = APPTAINER_STUB.format(log=bin_dir / "apptainer.log")
    for old, new in CLEANENV:
        assert old in stub
        stub = stub.replace(old, new)
    (bin_dir / "apptainer").write_text(stub)
    (bin_dir / "docker").write_text("#!/bin/sh\nexit 1\n")
    for name in ("python", "apptainer", "docker"):
        (bin_dir / name).chmod(0o755)
    return bin_dir


def plan_line(output: str) -> str:
    return next(line.strip() for line in output.splitlines() if line.startswith("GPU plan:"))


@pytest.mark.parametrize("visible, args, line", [
    (None, (), f"GPU plan: 3 × {H100} (CUDA_VISIBLE_DEVICES unset), 1 job per GPU → 3 train jobs at a time"),
    ("0,2", (), f"GPU plan: 2 × {H100} (CUDA_VISIBLE_DEVICES=0,2), 1 job per GPU → 2 train jobs at a time"),
    (None, ("jobs_per_gpu=2",), f"GPU plan: 3 × {H100} (CUDA_VISIBLE_DEVICES unset), 2 jobs per GPU → 6 train jobs "
                                "at a time"),
])  # fmt: skip
def test_the_dry_run_prints_the_plan(workdir, fake_machine, visible, args, line, tmp_path_factory):
    run = snakemake(workdir, "-n", "--config", "scale=full", *args, extra_path=fake_machine,
                    env_changes={"CUDA_VISIBLE_DEVICES": visible})  # fmt: skip
    assert plan_line(run.output) == f"{line}; slot locks in {machine_wide_locks(tmp_path_factory)}"


def test_a_smaller_gpu_resource_wins_and_a_cluster_executor_plans_nothing(workdir, fake_machine):
    run = snakemake(workdir, "-n", "--config", "scale=full", "--resources", "gpu=1", extra_path=fake_machine)
    assert "→ 1 train job at a time (--resources gpu=1); slot locks in " in plan_line(run.output)
    slurm = ("--executor", "slurm", "--jobs", "1", "--default-resources", "slurm_account=none", "slurm_partition=none")
    run = snakemake(workdir, "-n", "--config", "scale=full", *slurm, extra_path=fake_machine)
    assert "GPU plan" not in run.output


@pytest.mark.parametrize("changes, config, message", [
    ({"CUDA_VISIBLE_DEVICES": "0,5"}, (), "GPU plan for scale 'smoke': CUDA_VISIBLE_DEVICES=0,5 names GPU 5, which "
                                          "nvidia-smi -L does not list (it lists 0, 1, 2"),
    ({}, ("jobs_per_gpu=0",), "config: invalid value at key 'jobs_per_gpu': 0 is less than the minimum of 1"),
])  # fmt: skip
def test_bad_gpu_input_is_one_line_before_any_job(workdir, fake_machine, changes, config, message):
    run = snakemake(workdir, *TARGETS, "--cores", "2", "--config", "scale=smoke", *config, extra_path=fake_machine,
                    env_changes=changes, check=False)  # fmt: skip
    assert run.returncode == 1
    # its own line: the last of the console, or inside Snakemake's report of the input function that planned
    assert any(line.strip().startswith(message) for line in run.output.splitlines()), last_lines(run.output, 12)
    assert not planned_jobs(run.output) and not (workdir / "results").exists()  # no job started, nothing written


def test_a_failing_nvidia_smi_stops_the_run_before_any_job(workdir, tmp_path):
    said = "Failed to initialize NVML: Driver/library version mismatch"
    failing = nvidia_smi(tmp_path / "bin", script=f"echo '{said}'\nexit 18\n")
    run = snakemake(workdir, *TARGETS, "--cores", "2", "--config", "scale=smoke", extra_path=failing, check=False)
    assert run.returncode == 1
    line = f"GPU plan for scale 'smoke': nvidia-smi -L failed (exit 18: {said})"
    assert line in [text.strip() for text in run.output.splitlines()], last_lines(run.output, 12)
    assert not planned_jobs(run.output) and not (workdir / "results").exists()


@pytest.mark.parametrize("visible, jobs_per_gpu, gpus, apptainer_args", [
    (None, 1, {"0", "1", "2"}, "--nv"), ("2,0", 1, {"0", "2"}, "--nv"), ("2,0", 1, {"0", "2"}, "--nv --cleanenv"),
])  # fmt: skip
def test_local_gpu_jobs_run_in_slots_of_their_own_inside_the_container(workdir, fake_machine, tmp_path, visible,
                                                                       jobs_per_gpu, gpus, apptainer_args):  # fmt: skip
    """The plan is an argument of the job's command: with --cleanenv (no variable of the host reaches the job but
    APPTAINERENV_'s) each job still gets its slot, and sees only its GPU in nvidia-smi's PCI order."""
    record = tmp_path / "jobs.jsonl"
    run = snakemake(workdir, *TARGETS, "--cores", "8", "--use-singularity", f"--singularity-args={apptainer_args}",
                    "--config", "scale=smoke", f"jobs_per_gpu={jobs_per_gpu}", extra_path=fake_machine,
                    env_changes={"CUDA_VISIBLE_DEVICES": visible, "STUB_RECORD": str(record),
                                 "APPTAINERENV_STUB_RECORD": str(record)})  # fmt: skip
    jobs = [json.loads(line) for line in record.read_text().splitlines()]
    assert {job["order"] for job in jobs} == {"PCI_BUS_ID"}
    assert sorted(job["job"] for job in jobs) == ["train"] * len(TASKS) + ["verify-kernels"]
    assert {job["gpu"] for job in jobs} == gpus
    assert most_at_once([(j["start"], j["end"]) for j in jobs]) <= len(gpus) * jobs_per_gpu
    for gpu in gpus:
        assert most_at_once([(j["start"], j["end"]) for j in jobs if j["gpu"] == gpu]) <= jobs_per_gpu
    logs = sorted((workdir / "results/smoke/logs").rglob("*.log"))
    assert len(logs) == len(jobs)
    assert all(f" ({H100}, GPU-" in p.read_text() and "CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES=" in
               p.read_text() for p in logs)  # fmt: skip
    # the slot is taken inside the image: gpu-slot and its plan are part of the command apptainer runs
    assert "gpu-slot --gpus 1 --plan '{\"gpus\": [[" in (fake_machine / "apptainer.log").read_text()
    subprocess.run(["rm", "-rf", str(workdir / "results"), str(workdir / ".snakemake")], check=True)


def test_two_checkouts_on_one_machine_never_share_a_slot(workdir, fake_machine, tmp_path, tmp_path_factory):
    """Two checkouts of the workflow run at once on the stand-in 3-GPU machine: their locks are the machine's, so at
    most 3 GPU jobs run together and never two on one GPU."""
    other = copy_workflow(tmp_path / "other")
    write_config(other, variants=["delta_net_4layer"], gpu_lock_dir=machine_wide_locks(tmp_path_factory))
    record = tmp_path / "jobs.jsonl"
    runs = [subprocess.Popen([sys.executable, "-m", "snakemake", *TARGETS, "--cores", "8", "--config", "scale=smoke"],
                             cwd=folder, env=env(fake_machine, {"STUB_RECORD": str(record)}), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for folder in (workdir, other)]  # fmt: skip
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], "\n".join(last_lines(out, 12) for out in outputs)
    jobs = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(jobs) == 2 * (len(TASKS) + 1) and {job["gpu"] for job in jobs} == {"0", "1", "2"}
    assert most_at_once([(j["start"], j["end"]) for j in jobs]) <= 3
    for gpu in ("0", "1", "2"):
        assert most_at_once([(j["start"], j["end"]) for j in jobs if j["gpu"] == gpu]) == 1
    subprocess.run(["rm", "-rf", str(workdir / "results"), str(workdir / ".snakemake")], check=True)
