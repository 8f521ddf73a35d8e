"""A bad config fails before any job runs, with one line naming the key (the same checks as the CLI).

Values that only look wrong are accepted: numbers that Snakemake's ``--config`` or YAML 1.1 hand over as strings.
"""

import os
import re

import pytest
import yaml

from deltanet.machine import nvidia_gpu_visible
from deltanet.variants.catalog import variant_names

from .helpers import copy_workflow, job_counts, last_lines, snakemake, write_config

BROKEN_VARIANT = "delta_net_4layer_zz_broken_in_for_loop"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("badconfig"))


@pytest.fixture
def config_with(workdir):
    original = (workdir / "config.yaml").read_text()

    def apply(**changes):
        write_config(workdir, **changes)
        return workdir

    yield apply
    (workdir / "config.yaml").write_text(original)


def fails_before_any_job(workdir, *fragments, args=("--cores", "1")):
    run = snakemake(workdir, *args, check=False)
    assert run.returncode == 1, run.output
    for fragment in fragments:
        assert fragment in last_lines(run.output), run.output
    assert "Building DAG" not in run.output
    assert not (workdir / "results").exists()
    return run


@pytest.mark.parametrize(
    "changes, fragments",
    [
        ({"learning_rate": 0.1}, ["(top level)", "'learning_rate' was unexpected"]),
        ({"seeds": "12345"}, ["key 'seeds'", "is not of type 'array'"]),
        ({"seeds": ["1", "two"]}, ["key 'seeds.1'", "'two' is not of type 'integer'"]),
        ({"variants": []}, ["key 'variants'"]),
        ({"kernels": "fast"}, ["key 'kernels'", "'fast' is not one of ['auto', 'triton', 'naive']"]),
    ],
    ids=["unknown_key", "wrong_type", "not_a_number", "empty_variant_list", "unknown_kernels"],
)  # fmt: skip
def test_bad_config_fails_before_any_job(config_with, changes, fragments):
    fails_before_any_job(config_with(**changes), *fragments)


@pytest.mark.parametrize(
    "setting, line",
    [
        ('variants=["delta_net_4layr"]', "config: key 'variants': unknown variant 'delta_net_4layr'; did you mean "
                                         "'delta_net_4layer'? (deltanet variants lists all {variants})"),
        ("tasks=[compression,compresion]", "config: key 'tasks': unknown task 'compresion'; did you mean "
                                           "'compression'? (deltanet tasks lists all 6)"),
        ("scale=ful", "config: key 'scale': unknown scale 'ful'; did you mean 'full'? (allowed: auto, {scales})"),
        ("scale=huge", "config: key 'scale': unknown scale 'huge' (allowed: auto, {scales})"),
    ],
    ids=["variant", "task", "scale", "no_close_match"],
)  # fmt: skip
def test_a_misspelt_name_gets_the_closest_match_in_one_line(workdir, setting, line):
    run = fails_before_any_job(workdir, args=("--dry-run", "--config", setting))
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    names = {"variants": len(variant_names()), "scales": ", ".join(config["scales"])}
    assert line.format(**names) in last_lines(run.output).splitlines(), run.output


@pytest.mark.parametrize("start", ["deltanet", ".."], ids=["subfolder", "outside"])
def test_the_workflow_runs_in_its_own_folder_from_any_directory(tmp_path, start):
    """`snakemake -s path/to/Snakefile` reads the workflow's config.yaml and writes under its results/."""
    workdir = copy_workflow(tmp_path / "checkout")
    here = (workdir / start).resolve()
    run = snakemake(here, "-s", os.path.relpath(workdir / "Snakefile", here), "--cores", "1",
                    "results/tiny/identities.json", check=False)  # fmt: skip
    assert run.returncode == 0, run.output
    assert (workdir / "results" / "tiny" / "identities.json").is_file()
    assert not (here / "results").exists()


def test_another_working_directory_is_refused_naming_the_workflow_folder(workdir, tmp_path):
    """`--directory` would resolve config.yaml, the sources and results/ elsewhere: one line names where to run."""
    run = snakemake(workdir, "--dry-run", "--directory", str(tmp_path), check=False)
    assert run.returncode == 1
    line = (f"the working directory {tmp_path.resolve()} is not the workflow's folder {workdir.resolve()}: run without "
            f"--directory (outputs go to {workdir.resolve()}/results/)")  # fmt: skip
    assert line in last_lines(run.output).splitlines(), run.output
    assert "Building DAG" not in run.output


def test_config_yaml_that_is_no_yaml_fails_naming_file_and_line(config_with, workdir):
    path = workdir / "config.yaml"
    path.write_text(path.read_text().replace("seeds: [12345]", "seeds: [12345"))
    fails_before_any_job(workdir, "config file config.yaml, line ", ": not valid YAML (expected ',' or ']', but got")


def test_a_configfile_that_is_no_yaml_fails_before_any_job(workdir):
    """Snakemake reads --configfile files itself, before the workflow: its own one-line message."""
    (workdir / "broken.yaml").write_text("seeds: [1, 2\n")
    run = snakemake(workdir, "--dry-run", "--configfile", "broken.yaml", check=False)
    assert run.returncode == 1
    assert "Config file is not valid JSON or YAML" in last_lines(run.output) and "Building DAG" not in run.output


@pytest.mark.parametrize(
    "args",
    [("--config", "seeds=[1,2]"), ("--config", "seeds=[7]", "container={image: build, fakeroot: false}")],
    ids=["seed_list", "boolean"],
)
def test_values_that_config_passes_as_strings_are_accepted(workdir, args):
    """Snakemake's --config hands list and mapping items over as strings ('1', 'false'): they are converted."""
    run = snakemake(workdir, "--dry-run", *args)
    assert job_counts(run.output)["train"] > 0


def test_a_yaml_1_1_float_in_config_yaml_is_accepted(config_with, workdir):
    """`5e-3` (no dot) is a string to YAML 1.1 readers; the workflow and `deltanet train` read it as 0.005."""
    path = workdir / "config.yaml"
    text, n = re.subn(r"lrs: \[[^\]]*\]", "lrs: [5e-3]", path.read_text(), count=1)
    assert n == 1
    path.write_text(text)
    run = snakemake(workdir, "--dry-run", "--printshellcmds")
    assert job_counts(run.output)["train"] > 0


@pytest.fixture
def broken_variant(workdir):
    path = workdir / "deltanet" / "variants" / f"{BROKEN_VARIANT}.py"
    yield path
    path.unlink(missing_ok=True)


SYNTAX_ERROR = '"""Broken."""\n\nMIXER = "delta"\ndef loop_body(chunk, carry, params:\n'
IMPORT_ERROR = '"""Broken."""\n\nimport torch\nfrom deltanet.variants._common import no_such_helper\n\nMIXER = "delta"\n'


def deltanet_command(workdir, *args):
    import subprocess
    import sys

    from .helpers import env

    return subprocess.run([sys.executable, "-m", "deltanet", *args], cwd=workdir, env=env(), capture_output=True,
                          text=True)  # fmt: skip


def assert_one_error_line(run, command, path, message):
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith(f"deltanet {command}: {'error: ' if command == 'train' else ''}variant module {path}, "
                           f"{message}"), line  # fmt: skip


def test_a_variant_file_with_a_syntax_error_fails_the_dag_build_and_deltanet_variants(workdir, broken_variant):
    """Named file and line in one message: at DAG build (also -n; read with ast, no import) and from `deltanet
    variants`."""
    broken_variant.write_text(SYNTAX_ERROR)
    run = fails_before_any_job(workdir, f"{broken_variant.name}, line 4: SyntaxError: ", args=("--dry-run",))
    assert "Traceback" not in run.output
    listing = deltanet_command(workdir, "variants")
    assert listing.returncode == 1
    assert_one_error_line(listing, "variants", broken_variant, "line 4: SyntaxError: ")


def test_a_variant_that_fails_to_import_fails_its_job_and_deltanet_variants(workdir, broken_variant):
    """The DAG is built without importing the variants (no torch), so a bad import is the job's one failure line."""
    broken_variant.write_text(IMPORT_ERROR)
    message = "line 4: ImportError: cannot import name 'no_such_helper'"
    assert job_counts(snakemake(workdir, "--dry-run").output)["train"] > 0
    job = deltanet_command(workdir, "train", "--variant", BROKEN_VARIANT, "--task", "memorization", "--config",
                           "config.yaml", "--scale", "tiny", "--out", str(workdir / "job" / "runs.parquet"))  # fmt: skip
    assert job.returncode == 2
    assert_one_error_line(job, "train", broken_variant, message)
    listing = deltanet_command(workdir, "variants")
    assert listing.returncode == 1
    assert_one_error_line(listing, "variants", broken_variant, message)


def test_a_broken_variant_that_is_not_selected_does_not_block(workdir, broken_variant):
    broken_variant.write_text('"""Broken."""\n\ndef loop_body(:\n')
    run = snakemake(workdir, "--dry-run", "--config", "variants=[delta_net_4layer]")
    assert job_counts(run.output)["train"] == 6


needs_no_gpu = pytest.mark.skipif(nvidia_gpu_visible(), reason="this machine has a GPU: nothing is refused")


@needs_no_gpu
@pytest.mark.parametrize(
    "setting, message",
    [
        ("scale=full", "scale 'full' needs a GPU per job (scales.full.resources.gpu) and this machine, where the jobs "
                       "would run, has no NVIDIA GPU"),
        ("kernels=triton", "kernels 'triton' needs an NVIDIA GPU and this machine, where the jobs would run, has none"),
    ],
)  # fmt: skip
def test_settings_that_need_a_gpu_are_refused_before_any_job_on_a_cpu_machine(workdir, setting, message):
    run = snakemake(workdir, "--cores", "1", "--config", setting, check=False, env_changes={"TRITON_INTERPRET": None})
    assert run.returncode == 1
    assert message in last_lines(run.output), run.output
    assert "rule verify_kernels" not in run.output  # no job started, and none of its outputs was deleted
    assert not (workdir / "results" / "full").exists()
    # a dry run only plans: the plan of a GPU scale can be read on a CPU machine
    assert job_counts(snakemake(workdir, "--dry-run", "--config", setting).output)["train"] > 0


@needs_no_gpu
def test_a_cluster_executor_submits_the_full_scale_from_a_gpu_less_machine(workdir):
    """Jobs that run elsewhere are not refused: the SLURM executor gets as far as submitting (no SLURM here)."""
    run = snakemake(workdir, "--executor", "slurm", "--jobs", "1", "--config", "scale=full", "variants=[delta_net_4layer]",
                    "tasks=[memorization]", "--default-resources", "slurm_account=none", "slurm_partition=none",
                    "--slurm-init-seconds-before-status-checks", "1", check=False)  # fmt: skip
    assert run.returncode == 1
    assert "needs a GPU" not in run.output
    assert "Job submission failed" in run.output, run.output
