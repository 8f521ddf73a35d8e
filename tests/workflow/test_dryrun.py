"""Dry-run DAG shape, read from Snakemake's own job summary: one train job per selected variant x task."""

import pytest

from deltanet.tasks import TASK_IDS
from deltanet.variants import variant_names

from .helpers import copy_workflow, job_counts, planned_jobs, snakemake


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("dryrun"))


def expected(scale_train_jobs):
    return {"verify_kernels": 1, "train": scale_train_jobs, "aggregate": 1, "identities": 1, "report": 1, "all": 1}


def test_default_config_runs_tiny_with_every_variant_and_task(workdir):
    run = snakemake(workdir, "--dry-run")
    assert "scale 'tiny'" in run.output
    assert job_counts(run.output) == expected(len(variant_names()) * len(TASK_IDS))
    assert "results/tiny/accuracies.csv" in run.output
    assert "build_container" not in run.output  # no --use-singularity, no image


def test_full_scale_plans_the_whole_grid_with_gpus(workdir):
    run = snakemake(workdir, "--dry-run", "--config", "scale=full")
    counts = job_counts(run.output)
    assert counts == expected(len(variant_names()) * len(TASK_IDS))
    if len(variant_names()) == 24:
        assert counts["train"] == 144
    train_jobs = [wc for rule, wc in planned_jobs(run.output) if rule == "train"]
    assert all("scale=full" in wc for wc in train_jobs)
    assert "gpu=1, gpu_slot_plan=, runtime=2880, mem_mb=16000" in run.output  # no GPU here: no plan


@pytest.mark.parametrize(
    "target, message",
    [
        ("delta_net_4layr/compression", "unknown variant 'delta_net_4layr'; did you mean 'delta_net_4layer'? "
                                        "(deltanet variants lists all {variants})"),
        ("delta_net_4layer/compresion", "unknown task 'compresion'; did you mean 'compression'? "
                                        "(deltanet tasks lists all 6)"),
    ],
)  # fmt: skip
def test_a_typo_in_a_target_fails_at_dag_build_with_the_closest_name(workdir, target, message):
    run = snakemake(workdir, "--dry-run", f"results/tiny/runs/{target}.parquet", check=False)
    assert run.returncode == 1
    line = f"results/tiny/runs/{target}.parquet: {message.format(variants=len(variant_names()))}"
    assert line in [text.strip() for text in run.output.splitlines()], run.output  # inside Snakemake's report
    assert "Job stats" not in run.output


def test_lint_and_format_are_clean(workdir):
    import subprocess
    import sys
    from pathlib import Path

    from .helpers import REPO, env

    lint = snakemake(workdir, "--lint", check=False)
    assert lint.returncode == 0, lint.output
    snakefmt = Path(sys.executable).parent / "snakefmt"
    fmt = subprocess.run([snakefmt, "--check", "Snakefile", "workflow/"], cwd=REPO, env=env(), capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr
