"""A bad config fails before any job runs, with a message naming the key (the same checks as the CLI)."""

import pytest

from .helpers import copy_workflow, snakemake, write_config


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


def fails_before_any_job(workdir, *fragments):
    run = snakemake(workdir, "--cores", "1", check=False)
    assert run.returncode != 0
    for fragment in fragments:
        assert fragment in run.output, run.output
    assert "Building DAG" not in run.output
    assert not (workdir / "results").exists()


@pytest.mark.parametrize(
    "changes, fragments",
    [
        ({"learning_rate": 0.1}, ["(top level)", "'learning_rate' was unexpected"]),
        ({"seeds": "12345"}, ["key 'seeds'", "is not of type 'array'"]),
        ({"variants": ["delta_net_4layer", "delta_net_typo"]}, ["key 'variants'", "delta_net_typo", "delta_net_4layer"]),
        ({"tasks": ["compression", "recall"]}, ["key 'tasks'", "'recall'", "context_recall"]),
        ({"variants": []}, ["key 'variants'"]),
    ],
    ids=["unknown_key", "wrong_type", "unknown_variant", "unknown_task", "empty_variant_list"],
)
def test_bad_config_fails_before_any_job(config_with, changes, fragments):
    fails_before_any_job(config_with(**changes), *fragments)
