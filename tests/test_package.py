"""The package stands alone: a wheel holds the schema and the data, and installed non-editably it runs elsewhere."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel, and a non-editable install of it (``pip install --target``; PYTHONPATH puts it first)."""
    tmp = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp), str(REPO)], check=True,
                   capture_output=True)  # fmt: skip
    (wheel,) = tmp.glob("deltanet_repro-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp / "site"), str(wheel)], check=True,
                   capture_output=True)  # fmt: skip
    shutil.rmtree(REPO / "build", ignore_errors=True)  # setuptools' work folder in the checkout
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(REPO / "config.yaml", elsewhere)
    return wheel, tmp / "site", elsewhere


def deltanet(installed, *args):
    _, site, elsewhere = installed
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-m", "deltanet", *args], cwd=elsewhere, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_the_wheel_ships_the_schema_and_the_reference_table(installed):
    names = zipfile.ZipFile(installed[0]).namelist()
    assert "deltanet/schemas/config.schema.yaml" in names and "deltanet/data/reported_accuracies.csv" in names


def test_the_installed_package_runs_from_another_directory(installed):
    where = deltanet(installed, "tasks").stdout
    assert "context_recall" in where
    run = deltanet(installed, "train", "--help")
    assert run.returncode == 0 and "--variant" in run.stdout
    located = subprocess.run([sys.executable, "-c", "import deltanet; print(deltanet.__file__)"], cwd=installed[2],
                             env={**os.environ, "PYTHONPATH": str(installed[1])}, capture_output=True, text=True)
    assert located.stdout.startswith(str(installed[1])), located.stdout
    # the config is read and validated against the packaged schema; the bad variant is the one error line
    run = deltanet(installed, "train", "--variant", "nope", "--task", "memorization", "--config", "config.yaml",
                   "--out", "runs.parquet")  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().startswith("deltanet train: error: unknown variant 'nope'"), run.stderr
