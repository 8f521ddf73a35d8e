"""The image for real: Apptainer 1.4.5 (.ci/provide-apptainer) builds it through build_container from a local
Debian 12 base (.ci/debian-base-image) with the CPU lock, a reduced tiny pipeline runs in it, and GPU jobs take
their slots in it on a stand-in 3-GPU machine.

Every project rule must run inside the image: the host's `python` on PATH is a stand-in that fails, and the rows
record the image's Python (Debian 12's 3.11.2). Needs root (mount namespaces, pivot_root) and the
Debian mirror and PyPI; skipped without root or mount namespaces.
"""

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from deltanet.hashing import file_sha256

from .helpers import NOTHING_TO_DO, REPO, copy_workflow, last_lines, planned_jobs, snakemake, write_config
from .test_faults import FAILING_VARIANT
from .test_gpu_slots import nvidia_smi

pytestmark = pytest.mark.slow

VARIANTS = ["delta_net_4layer", "gated_delta_net_4layer"]
TASKS = ["memorization", "context_recall"]
PROJECT_RULES = ("verify_kernels", "train", "aggregate", "identities", "report")
IMAGE_PYTHON = "3.11.2"  # Debian 12's python3.11, which the Dockerfile installs on the Debian base
ON_THE_HOST = "deltanet-repro test: a project rule ran on the host, not in the image"
# An uncompressed image (3.3 GB): Apptainer's default gzip took 8 of the build's 10.5 minutes on 2 cores, and this
# 3 minutes in all (lz4: 4 minutes, 1.6 GB).
SQUASHFS = {"APPTAINER_MKSQUASHFS_ARGS": "-noI -noD -noF -noX"}


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    """A bin folder with the real `apptainer` and a host `python` that fails; the local Debian 12 base image."""
    if os.geteuid() != 0:
        pytest.skip("real Apptainer here needs root: .ci/provide-apptainer enters a root file system with pivot_root")
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare --mount fails here (no private mount namespace): .ci/provide-apptainer cannot run")
    scripts = [REPO / ".ci/provide-apptainer", REPO / ".ci/debian-base-image"]
    # reused across runs while the scripts are unchanged (both are idempotent and lock against each other)
    key = hashlib.sha256(b"".join(path.read_bytes() for path in scripts)).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "deltanet-repro" / f"apptainer-{key}"
    apptainer_bin = run_tool(scripts[0], cache / "apptainer")
    path = f"{apptainer_bin}{os.pathsep}{os.environ['PATH']}"
    base = run_tool(scripts[1], cache / "base", env={**os.environ, "PATH": path})
    bin_dir = tmp_path_factory.mktemp("machine")
    (bin_dir / "apptainer").symlink_to(apptainer_bin / "apptainer")
    for name in ("python", "python3"):
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{ON_THE_HOST}: {name} $*" >&2\nexit 97\n')
        (bin_dir / name).chmod(0o755)
    return bin_dir, base


def run_tool(script, folder, env=None):
    proc = subprocess.run([script, folder], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{script} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return Path(proc.stdout.strip())


def in_image(workdir, machine, *args, check=True):
    """Snakemake with --use-singularity, the real `apptainer` and the failing host `python` first on PATH."""
    return snakemake(workdir, "--use-singularity", *args, extra_path=machine[0], check=check, timeout=1500,
                     env_changes=SQUASHFS)  # fmt: skip


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, machine):
    """(workdir, console output) of a full run of the reduced pipeline in a copy that builds the CPU image on the
    Debian 12 base."""
    workdir = copy_workflow(tmp_path_factory.mktemp("apptainer"))
    build_args = {"BASE": str(machine[1]), "LOCK": "requirements/cpu.txt"}
    write_config(workdir, scale="tiny", variants=VARIANTS, tasks=TASKS,
                 container={"image": "build", "fakeroot": False, "build_args": build_args})  # fmt: skip
    yield workdir, in_image(workdir, machine, "--cores", "all").output
    subprocess.run(["rm", "-rf", str(workdir / "results/container")], check=True)  # GBs: pytest keeps 3 runs' files


def built_image(workdir):
    (image,) = (workdir / "results/container").glob("deltanet-*.sif")
    return image


def test_every_project_rule_ran_in_the_image_built_from_the_local_base(first_run):
    workdir, output = first_run
    image = built_image(workdir)
    jobs = planned_jobs(output)
    assert {rule for rule, _ in jobs} == {"build_container", *PROJECT_RULES, "all"}
    definition = image.with_suffix(".def").read_text()
    assert re.search(r"^Bootstrap: localimage\nFrom: /\S+/debian12\.sif$", definition, re.MULTILINE), definition
    assert re.search(r"^LOCK=requirements/cpu\.txt$", definition, re.MULTILINE), definition
    assert ON_THE_HOST not in output
    runs = pd.concat(pd.read_parquet(path) for path in (workdir / "results/tiny/runs").rglob("*.parquet"))
    assert len(runs) == len(VARIANTS) * len(TASKS)
    assert set(runs["python_version"]) == {IMAGE_PYTHON}  # the image's (a host may have the same Debian Python)
    assert set(runs["image_sha256"]) == {file_sha256(image)}
    assert set(runs["lock_file"]) == {"/opt/deltanet/requirements/cpu.txt"}
    assert set(runs["lock_sha256"]) == {file_sha256(REPO / "requirements/cpu.txt")}
    assert (workdir / "results/tiny/report.html").is_file()


def test_what_the_image_writes_belongs_to_the_user_who_ran_snakemake(first_run):
    workdir, _ = first_run
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in (workdir / "results").rglob("*")}
    assert owners == {(os.getuid(), os.getgid())}


def test_nothing_reruns_and_a_dockerfile_change_reruns_the_image_and_every_containerised_job(first_run, machine):
    workdir, _ = first_run
    assert NOTHING_TO_DO in in_image(workdir, machine, "--cores", "all").output
    dockerfile = workdir / "Dockerfile"
    original = dockerfile.read_bytes()
    try:
        dockerfile.write_bytes(original + b"# a change\n")
        plan = in_image(workdir, machine, "--dry-run").output
    finally:
        dockerfile.write_bytes(original)
    runs = [("train", f"scale=tiny, variant={v}, task={t}") for v in VARIANTS for t in TASKS]
    one_each = [("build_container", ""), ("all", "")] + [(rule, "scale=tiny") for rule in PROJECT_RULES if rule != "train"]
    assert planned_jobs(plan) == dict.fromkeys(one_each + runs, 1)
    assert built_image(workdir).name not in plan  # a new image path


def test_a_failure_inside_the_image_is_one_line_in_snakemakes_log(first_run, machine):
    workdir, _ = first_run
    name = "delta_net_4layer_fails_in_for_loop"
    path = workdir / "deltanet" / "variants" / f"{name}.py"
    path.write_text(FAILING_VARIANT)
    try:
        run = in_image(workdir, machine, f"results/tiny/runs/{name}/{TASKS[0]}.parquet", "--cores", "1", "--config",
                       f"variants=[{name}]", check=False)  # fmt: skip
    finally:
        path.unlink()
    assert run.returncode == 1
    cause = "deltanet train: error: RuntimeError: loop body fails on purpose"
    line = f"deltanet-repro: train (scale=tiny, variant={name}, task={TASKS[0]}) failed: {cause}"
    assert line in last_lines(run.output), run.output[-3000:]
    assert ON_THE_HOST not in run.output


@pytest.mark.parametrize("apptainer_args", ["", "--cleanenv"])
def test_gpu_jobs_take_their_slot_in_the_image_and_refuse_without_nv(first_run, machine, tmp_path, apptainer_args):
    """The host's stand-in nvidia-smi lists 3 GPUs, CUDA_VISIBLE_DEVICES=2,0, no --nv: each train job takes a slot
    of the plan inside the image (with --cleanenv too: the plan is an argument of its command), sees only that GPU,
    and refuses in one line instead of training on the CPU."""
    workdir, _ = first_run
    bin_dir = nvidia_smi(tmp_path / "bin", 3)
    for tool in machine[0].iterdir():
        (bin_dir / tool.name).symlink_to(tool)
    # the kernel check needs CUDA too and would refuse first: stand in for its outputs so that the train jobs start
    (workdir / "results/smoke/kernels").mkdir(parents=True)
    for name in ("verify.parquet", "verify.md"):
        (workdir / "results/smoke/kernels" / name).touch()
    runs = [(variant, task) for variant in VARIANTS for task in TASKS]
    args = [f"--apptainer-args={apptainer_args}"] if apptainer_args else []
    try:
        run = snakemake(workdir, "--use-singularity", *args, "--cores", "3", "--keep-going",
                        *(f"results/smoke/runs/{v}/{t}.parquet" for v, t in runs), "--config", "scale=smoke",
                        f"gpu_lock_dir={tmp_path / 'locks'}", extra_path=bin_dir,
                        env_changes={"CUDA_VISIBLE_DEVICES": "2,0"}, check=False)  # fmt: skip
        assert run.returncode == 1 and ON_THE_HOST not in run.output
        for variant, task in runs:
            log = (workdir / f"results/smoke/logs/train/{variant}/{task}.log").read_text()
            slot = re.search(r"^GPU slot [12] of 2: GPU ([02]) \(.*\), CUDA_DEVICE_ORDER=PCI_BUS_ID "
                             r"CUDA_VISIBLE_DEVICES=([02])$", log, re.MULTILINE)  # fmt: skip
            assert slot and slot.group(1) == slot.group(2), log
            refusal = f"device 'cuda', but torch sees no CUDA device (CUDA_VISIBLE_DEVICES='{slot.group(1)}'; "
            line = f"deltanet-repro: train (scale=smoke, variant={variant}, task={task}) failed: "
            assert any(text.startswith(line) and refusal in text for text in run.output.splitlines()), run.output
        assert not list((workdir / "results/smoke/runs").rglob("*.parquet"))
    finally:
        subprocess.run(["rm", "-rf", str(workdir / "results/smoke")], check=True)
