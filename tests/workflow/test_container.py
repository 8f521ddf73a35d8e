"""Container wiring with a stub `apptainer` (fast, no root needed; test_apptainer.py runs the real one) and the real
spython and hadolint.

The stub answers --version, records `build` (and creates the image), and runs `exec`'s command on the host after
the image argument, logging every call.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import NOTHING_TO_DO, REPO, copy_workflow, env, job_counts, snakemake, write_config

STUB = """#!/usr/bin/env bash
echo "$*" >> {log}
case "$1" in
    --version) echo "apptainer version 1.3.4" ;;
    build)
        shift
        while [[ "$1" == --* ]]; do shift; done
        cp "$2" "$1.definition-used"
        : > "$1" ;;
    exec)
        shift
        while [[ $# -gt 0 && "$1" != *.sif ]]; do shift; done
        shift
        exec "$@" ;;
    *) echo "stub apptainer: unexpected $*" >&2; exit 2 ;;
esac
"""
SINGULARITY = ("--use-singularity", "--singularity-args=--nv")
# project rule -> the `deltanet` command it runs
PROJECT_RULES = {"verify_kernels": "verify-kernels", "train": "train", "aggregate": "aggregate",
                 "identities": "variants --identities", "report": "report"}  # fmt: skip


@pytest.fixture(scope="module")
def stub_bin(tmp_path_factory):
    bin_dir = tmp_path_factory.mktemp("stub-bin")
    stub = bin_dir / "apptainer"
    stub.write_text(STUB.format(log=bin_dir / "calls.log"))
    stub.chmod(0o755)
    # no Docker daemon: the build takes the spython + apptainer path on every host
    docker = bin_dir / "docker"
    docker.write_text("#!/bin/sh\nexit 1\n")
    docker.chmod(0o755)
    return bin_dir


def calls(stub_bin, verb):
    log = stub_bin / "calls.log"
    return [line for line in log.read_text().splitlines() if line.split()[0] == verb] if log.exists() else []


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("container"))
    write_config(workdir, scale="tiny", variants=["delta_net_4layer"], tasks=["memorization"])
    return workdir


def image_path(output):
    return re.search(r"results/container/deltanet-[0-9a-f]{12}\.sif", output).group(0)


def test_without_the_flag_no_image_is_built(workdir):
    counts = job_counts(snakemake(workdir, "--dry-run").output)
    assert "build_container" not in counts and counts["train"] == 1


@pytest.mark.parametrize("image", ["images/prebuilt.sif", "docker://ghcr.io/example/deltanet:1.0"])
def test_prebuilt_image_schedules_no_build(workdir, stub_bin, image):
    config = (workdir / "config.yaml").read_text()
    try:
        write_config(workdir, container={"image": image, "fakeroot": False})
        if "://" not in image:
            (workdir / image).parent.mkdir(exist_ok=True)
            (workdir / image).touch()
        run = snakemake(workdir, "--dry-run", *SINGULARITY, extra_path=stub_bin)
    finally:
        (workdir / "config.yaml").write_text(config)
    counts = job_counts(run.output)
    assert "build_container" not in counts and counts["train"] == 1
    assert calls(stub_bin, "build") == []


@pytest.mark.slow
def test_use_singularity_builds_once_and_runs_every_project_rule_in_the_image(workdir, stub_bin):
    run = snakemake(workdir, "--cores", "all", *SINGULARITY, extra_path=stub_bin)
    image = image_path(run.output)
    builds = calls(stub_bin, "build")
    assert builds == [f"build --fakeroot {image} {image.removesuffix('.sif')}.def"]
    definition = (workdir / f"{image}.definition-used").read_text()
    assert "Bootstrap: docker" in definition and re.search(r"^From: nvidia/cuda@sha256:[0-9a-f]{64}$", definition, re.M)
    for lock in ("cuda", "cpu"):
        assert f"{workdir}/requirements/{lock}.txt /opt/deltanet/requirements/" in definition
    assert re.search(r"^LOCK=requirements/cuda\.txt$", definition, re.M)
    execs = calls(stub_bin, "exec")
    assert len(execs) == len(PROJECT_RULES)
    for line in execs:
        assert re.search(rf"--nv .*{re.escape(image)} bash -c", line), line
    ran = {rule for rule, command in PROJECT_RULES.items() if any(f"python -m deltanet {command}" in line for line in execs)}
    assert ran == set(PROJECT_RULES)
    assert (workdir / "results/tiny/accuracies.csv").exists() and (workdir / "results/tiny/report.html").exists()

    again = snakemake(workdir, "--cores", "all", *SINGULARITY, extra_path=stub_bin)
    assert NOTHING_TO_DO in again.output and len(calls(stub_bin, "build")) == 1

    dockerfile = workdir / "Dockerfile"
    original = dockerfile.read_bytes()
    try:
        dockerfile.write_bytes(original + b"# a change\n")
        edited = snakemake(workdir, "--dry-run", *SINGULARITY, extra_path=stub_bin)
    finally:
        dockerfile.write_bytes(original)
    assert image_path(edited.output) != image
    assert job_counts(edited.output) == {
        "build_container": 1, "verify_kernels": 1, "train": 1, "aggregate": 1, "identities": 1, "report": 1, "all": 1
    }


def test_a_changed_pin_in_the_lock_gives_a_new_image_path(tmp_path, stub_bin):
    workdir = copy_workflow(tmp_path)  # its own copy: nothing built yet, so every dry run names the image
    write_config(workdir, scale="tiny", variants=["delta_net_4layer"], tasks=["memorization"])
    image = image_path(snakemake(workdir, "--dry-run", *SINGULARITY, extra_path=stub_bin).output)
    lock = workdir / "requirements/cuda.txt"
    lock.write_text(re.sub(r"^tqdm==\S+", "tqdm==4.0.0", lock.read_text(), count=1, flags=re.MULTILINE))
    edited = snakemake(workdir, "--dry-run", *SINGULARITY, extra_path=stub_bin)
    assert image_path(edited.output) != image
    assert job_counts(edited.output)["build_container"] == 1


def test_the_image_installs_only_its_lock_on_a_base_pinned_by_digest():
    lines = (REPO / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    instructions = [line.split(maxsplit=1) for line in lines if line.strip() and not line.startswith("#")]
    args = dict(value.split("=", 1) for op, value in instructions if op == "ARG")
    assert re.fullmatch(r"nvidia/cuda@sha256:[0-9a-f]{64}", args["BASE"]), args
    assert args["LOCK"] == "requirements/cuda.txt"
    assert [value for op, value in instructions if op == "FROM"] == ["${BASE}"]
    assert [value for op, value in instructions if op == "COPY"] == [
        "requirements/cuda.txt requirements/cpu.txt /opt/deltanet/requirements/"
    ]
    (install,) = [value for op, value in instructions if op == "RUN" and "pip install" in value]
    assert install.count("pip install") == 1
    assert 'pip install --no-cache-dir --require-hashes --requirement "/opt/deltanet/${LOCK}"' in install


def test_build_args_pick_a_local_base_and_the_cpu_lock(tmp_path, stub_bin):
    workdir = copy_workflow(tmp_path / "wf")
    base = tmp_path / "debian12.sif"
    base.write_bytes(b"a base image")
    build_args = {"BASE": str(base), "LOCK": "requirements/cpu.txt"}
    write_config(workdir, scale="tiny", variants=["delta_net_4layer"], tasks=["memorization"],
                 container={"image": "build", "fakeroot": False, "build_args": build_args})  # fmt: skip
    image = image_path(snakemake(workdir, "--dry-run", *SINGULARITY, extra_path=stub_bin).output)
    snakemake(workdir, "--cores", "1", *SINGULARITY, image, extra_path=stub_bin)
    definition = (workdir / f"{image}.definition-used").read_text()
    assert definition.startswith(f"Bootstrap: localimage\nFrom: {base}\n"), definition
    assert re.search(r"^LOCK=requirements/cpu\.txt$", definition, re.M)
    base.write_bytes(b"another base image")  # the base's content is in the image's name
    assert image_path(snakemake(workdir, "--dry-run", *SINGULARITY, extra_path=stub_bin).output) != image


@pytest.mark.parametrize("build_args, message", [
    ({"BASEIMAGE": "x.sif"}, "container.build_args: 'BASEIMAGE' is not a build arg of the Dockerfile (it has BASE, LOCK)"),
    ({"LOCK": "requirements/cpu.in"}, "container.build_args: LOCK 'requirements/cpu.in' is not one of the locks the "
                                      "image copies: requirements/cuda.txt, requirements/cpu.txt"),
    ({"BASE": "bases/missing.sif"}, "container.build_args: BASE bases/missing.sif: no such image file"),
])  # fmt: skip
def test_a_bad_build_arg_is_one_line(workdir, build_args, message):
    run = snakemake(workdir, "--dry-run", "--config", f"container={{image: build, fakeroot: true, build_args: "
                    f"{build_args}}}", check=False)  # fmt: skip
    assert run.returncode == 1
    assert message in [line.strip() for line in run.output.splitlines()], run.output[-2000:]


def test_hadolint_passes():
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([hadolint, "Dockerfile"], cwd=REPO, env=env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
