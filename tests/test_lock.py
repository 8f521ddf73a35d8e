"""The lock files in requirements/: they agree with pyproject.toml, install with hash checking, and reach the run rows.

The slow test installs the CUDA lock's non-torch part into a fresh venv (torch, triton and the CUDA wheels are GBs
and need a GPU image to matter); the Dockerfile's Python is checked against the lock's without building anything.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from packaging.requirements import Requirement
from packaging.version import Version
from test_aggregate import make_run

from deltanet.report.run_summary import summary
from deltanet.training import provenance
from deltanet.training.lockfile import Pin, normalize, read_pins, target

tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ (the locks are resolved for 3.11)")

REPO = Path(__file__).resolve().parents[1]


def lock_script():
    spec = importlib.util.spec_from_file_location("lock", REPO / "requirements" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# lock -> the pyproject extras it must also satisfy (as requirements/lock.py resolves it)
LOCKS = {lock: tuple(extras) for lock, (_, extras, _) in lock_script().LOCKS.items()}
# torch and what only torch's CUDA build needs: GBs of wheels, left out of the fresh-venv install
TORCH_PART = re.compile(r"torch|triton|nvidia-.*|cuda-.*")


def disagreements(pyproject: dict, lock_text: str, extras: tuple[str, ...]) -> list[str]:
    """pyproject requirements (for the lock's target) that the lock misses or pins outside their range."""
    python, _ = target(lock_text)
    environment = {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux",
                   "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix"}  # fmt: skip
    project = pyproject["project"]
    wanted = [(Requirement(r), "") for r in project["dependencies"]]
    wanted += [(Requirement(r), extra) for extra in extras for r in project["optional-dependencies"][extra]]
    pins, problems = read_pins(lock_text), []
    for requirement, extra in wanted:
        if requirement.marker and not requirement.marker.evaluate({**environment, "extra": extra}):
            continue
        pin = pins.get(normalize(requirement.name))
        if pin is None:
            problems.append(f"{requirement} is not in the lock")
        elif not requirement.specifier.contains(Version(pin.version), prereleases=True):
            problems.append(f"{requirement} but the lock pins {pin.version}")
    return problems


@pytest.mark.parametrize("lock", LOCKS)
def test_the_lock_satisfies_every_requirement_of_pyproject(lock):
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    problems = disagreements(pyproject, (REPO / lock).read_text(), LOCKS[lock])
    assert problems == [], f"{lock} disagrees with pyproject.toml (run python requirements/lock.py): {problems}"


def test_a_pyproject_edit_the_lock_does_not_follow_is_reported():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    added = ["numpy>=99", "rich>=13; platform_system == 'Linux'", "colorama; os_name == 'nt'"]
    pyproject["project"]["dependencies"] += added
    lock_text = (REPO / "requirements/cuda.txt").read_text()
    numpy = read_pins(lock_text)["numpy"].version
    assert disagreements(pyproject, lock_text, ()) == [
        f"numpy>=99 but the lock pins {numpy}",
        'rich>=13; platform_system == "Linux" is not in the lock',
    ]


@pytest.mark.parametrize("lock", LOCKS)
def test_each_lock_pins_its_in_file_torch_with_hashes(lock):
    (line,) = [x for x in (REPO / lock).with_suffix(".in").read_text().splitlines() if x and not x.startswith("#")]
    requirement, pins = Requirement(line), read_pins((REPO / lock).read_text())
    assert requirement.specifier.contains(pins["torch"].version)
    assert all(pin.hashes for pin in pins.values()), [name for name, pin in pins.items() if not pin.hashes]


def test_the_dockerfile_python_is_the_locks():
    dockerfile = (REPO / "Dockerfile").read_text()
    venv_pythons = set(re.findall(r"python(3\.\d+) -m venv", dockerfile))
    assert venv_pythons == {target((REPO / "requirements/cuda.txt").read_text())[0]}


def test_ci_runs_the_readme_test_block_verbatim():
    blocks = re.findall(r"^```bash\n(.*?)^```", (REPO / "README.md").read_text(), re.MULTILINE | re.DOTALL)
    install_and_test = blocks[1].splitlines()
    assert install_and_test[1] == "pip install -r requirements/cpu.txt && pip install --no-deps -e ."
    ci = (REPO / ".ci/run").read_text().splitlines()
    assert ci[-len(install_and_test) :] == install_and_test


def test_lock_reader_keeps_each_pin_with_its_hashes():
    text = (
        "# Resolved for Python 3.11 on x86_64-manylinux_2_28, with the sha256 of every file pip may install.\n"
        f"PyYAML==6.0.4 \\\n    --hash=sha256:{'a' * 64} \\\n    --hash=sha256:{'b' * 64}\n    # via snakemake\n"
        f"torch==2.13.0+cpu \\\n    --hash=sha256:{'c' * 64}\n"
    )
    assert read_pins(text) == {"pyyaml": Pin("6.0.4", frozenset({"a" * 64, "b" * 64})),
                               "torch": Pin("2.13.0+cpu", frozenset({"c" * 64}))}  # fmt: skip
    assert target(text) == ("3.11", "x86_64-manylinux_2_28")
    with pytest.raises(ValueError, match="lock file has no line like '# Resolved for Python"):
        target("numpy==2.0\n")


def test_regenerating_prints_each_pin_that_changed():
    old = {"numpy": Pin("2.4.6", frozenset("a")), "tqdm": Pin("4.70.1", frozenset("b")),
           "idna": Pin("3.20", frozenset("c")), "pyyaml": Pin("6.0.4", frozenset("d"))}  # fmt: skip
    new = {"numpy": Pin("2.4.7", frozenset("e")), "tqdm": Pin("4.70.1", frozenset("f")),
           "pyyaml": Pin("6.0.4", frozenset("d")), "uv": Pin("0.13.9", frozenset("g"))}  # fmt: skip
    assert lock_script().changes(old, new) == [
        "- idna 3.20", "  numpy 2.4.6 -> 2.4.7", "  tqdm 4.70.1: hashes changed", "+ uv 0.13.9"
    ]  # fmt: skip
    assert lock_script().changes(old, old) == []


def test_run_rows_record_the_lock_the_environment_matches_and_the_image(tmp_path, monkeypatch):
    pyyaml = provenance.package_version("pyyaml")
    lock, image = tmp_path / "cuda.txt", tmp_path / "deltanet-0123456789ab.sif"
    lock.write_text(f"pyyaml=={pyyaml} \\\n    --hash=sha256:{'a' * 64}\n")
    image.write_bytes(b"not really an image")
    monkeypatch.setenv("DELTANET_LOCK", str(lock))
    monkeypatch.setenv("APPTAINER_CONTAINER", str(image))
    provenance.environment_files.cache_clear()
    assert provenance.environment_files() == {
        "lock_file": str(lock),
        "lock_sha256": hashlib.sha256(lock.read_bytes()).hexdigest(),
        "image_sha256": hashlib.sha256(b"not really an image").hexdigest(),
    }
    lock.write_text("pyyaml==0.1\n")  # installed by hand, not from this lock
    monkeypatch.delenv("APPTAINER_CONTAINER")
    provenance.environment_files.cache_clear()
    assert provenance.environment_files() == {"lock_file": str(lock), "lock_sha256": "none", "image_sha256": "none"}
    monkeypatch.delenv("DELTANET_LOCK")
    provenance.environment_files.cache_clear()
    assert provenance.environment_files()["lock_file"] == "requirements/cpu.txt"
    provenance.environment_files.cache_clear()


def test_the_report_provenance_names_the_lock_and_the_image():
    in_image = {"lock_file": "/opt/deltanet/requirements/cuda.txt", "lock_sha256": "3" * 64, "image_sha256": "4" * 64}
    runs = [make_run("delta_net_4layer", "compression", 0, 1e-3, 0.0, 1, 0.5),
            make_run("delta_net_4layer", "memorization", 0, 1e-3, 0.0, 1, 0.5, **in_image)]  # fmt: skip
    table = dict(summary(pd.DataFrame(runs), "tiny", []).itertuples(index=False))
    assert table["lock file"] == "/opt/deltanet/requirements/cuda.txt, requirements/cpu.txt"
    assert table["lock sha256"] == f"{'2' * 64}, {'3' * 64}"
    assert table["image sha256 (--use-singularity)"] == f"{'4' * 64}, none"
    assert table["fidelity profile (docs/fidelity.md)"] == "iso_state"


def test_a_tampered_hash_fails_the_download_with_pips_message(tmp_path):
    lock_text = (REPO / "requirements/cpu.txt").read_text()
    pin = read_pins(lock_text)["tabulate"]
    tampered = tmp_path / "tampered.txt"
    tampered.write_text(f"tabulate=={pin.version} --hash=sha256:{'0' * 64}\n")
    run = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(tmp_path / "d"),
                          "--require-hashes", "-r", str(tampered)], capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 1
    assert "THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE" in run.stderr
    assert f"Expected sha256 {'0' * 64}" in run.stderr


@pytest.mark.slow
def test_the_cuda_lock_without_torch_installs_hash_checked_in_a_fresh_venv(tmp_path):
    lock_text = (REPO / "requirements/cuda.txt").read_text()
    python, _ = target(lock_text)
    if f"{sys.version_info.major}.{sys.version_info.minor}" != python:
        pytest.skip(f"the lock is for Python {python}; this is {sys.version.split()[0]}")
    kept, keep = [], True
    for line in lock_text.splitlines():
        if match := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", line):
            keep = not TORCH_PART.fullmatch(normalize(match.group(1)))
        if keep:
            kept.append(line)
    requirements = tmp_path / "cuda-without-torch.txt"
    requirements.write_text("\n".join(kept) + "\n")
    expected = {name: pin.version for name, pin in read_pins(requirements.read_text()).items()}
    assert len(expected) > 60 and not any(TORCH_PART.fullmatch(name) for name in expected)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # --no-deps: torchmetrics and others require torch, which this install leaves out on purpose; --no-compile: the
    # bytecode of ~70 packages is two thirds of the install's time and nothing the hash check is about
    install = subprocess.run([venv / "bin/python", "-m", "pip", "install", "--no-deps", "--require-hashes",
                              "--no-compile", "-r", str(requirements)], capture_output=True, text=True,
                             timeout=900)  # fmt: skip
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    listed = subprocess.run([venv / "bin/python", "-m", "pip", "list", "--format=json"],
                            capture_output=True, text=True, check=True)  # fmt: skip
    installed = {normalize(p["name"]): p["version"] for p in json.loads(listed.stdout)}
    assert {name: installed.get(name) for name in expected} == expected


def test_the_image_is_hashed_once_and_rehashed_when_it_changes(tmp_path):
    image = tmp_path / "deltanet-0123456789ab.sif"
    image.write_bytes(b"image v1")
    memo = tmp_path / "deltanet-0123456789ab.sif.sha256"
    assert provenance.image_file_sha256(image) == hashlib.sha256(b"image v1").hexdigest()
    digest, stamp = memo.read_text().split(" ", 1)
    memo.write_text(f"{'f' * 64} {stamp}")  # a memo whose size and mtime match is trusted: the file is not re-read
    assert provenance.image_file_sha256(image) == "f" * 64
    image.write_bytes(b"image version 2")  # rebuilt in place: new size and mtime
    assert provenance.image_file_sha256(image) == hashlib.sha256(b"image version 2").hexdigest()
