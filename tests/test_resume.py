"""Faults a cluster brings, each with the real fault on a real ``deltanet train`` process: SIGTERM mid-epoch (SLURM's
time limit, preemption), a file size limit while a checkpoint is written (a full disk), ``kill -9`` followed by a
garbage checkpoint; and where a resumed group's tensors land (fake CUDA tensors, no GPU needed).

Every rerun must give the uninterrupted job's rows: bitwise on CPU (timing columns aside).
"""

import contextlib
import dataclasses
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_train import REPO, TASK, TIMING, stop_after, train, write_config

from deltanet.tasks import make_datasets, task_settings
from deltanet.training import job as job_module
from deltanet.training.checkpoint import OutputWriteError
from deltanet.training.fused import FusedModel
from deltanet.training.loop import GroupPlan, RunPlan, TensorData, resume_or_start, train_group

# long enough to be mid-training when the signal comes, short enough to finish in seconds
OPTIM = {"max_epochs": 40, "stop_accuracy": 1.0, "batch_size": 16}
CKPT = "runs.parquet.ckpt/runs-0001-0002.pt"
SEQ_LEN = 16
TASK_SIZE = {"seq_len": SEQ_LEN, "num_train_examples": 64, "num_test_examples": 32}  # test_train's test scale


def group_plan() -> GroupPlan:
    """The group test_train's config trains (its 2 runs, its model), on the CPU."""
    vocab = int(task_settings(TASK, "baseline", TASK_SIZE)[0].fields["vocab_size"])
    model = {"dim": 16, "num_heads": 2, "head_dim": 8, "chunk_size": 16, "variant": "delta_net_4layer",
             "kernels": "naive"}  # fmt: skip
    optim = {**OPTIM, "lrs": [1e-2, 5e-3], "weight_decays": [0.0], "min_lr": 1e-6}
    runs = [RunPlan(1, 1e-2, 0.0, 12345), RunPlan(2, 5e-3, 0.0, 12345)]
    return GroupPlan(runs, 2, "baseline", vocab, model, False, optim, torch.device("cpu"))


def start(config: Path, out: Path, limit_bytes: int | None = None) -> subprocess.Popen:
    """``deltanet train`` as its own process (optionally under RLIMIT_FSIZE), output to ``<out>.log``."""
    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    cmd = [sys.executable, "-m", "deltanet", "train", "--variant", "delta_net_4layer", "--task", TASK, "--config",
           str(config), "--out", str(out), "--scale", "test", "--device", "cpu", "--threads", "1"]  # fmt: skip
    log = open(out.with_suffix(".log"), "a")
    return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=limit_file_size if limit_bytes else None)  # fmt: skip


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the job ended ({proc.returncode}) before {path} appeared"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.02)


def finish(proc: subprocess.Popen, timeout: float = 300) -> int:
    return proc.wait(timeout=timeout)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uninterrupted")
    config = write_config(tmp, **OPTIM)
    assert train(config, tmp / "runs.parquet") == 0
    return config, pd.read_parquet(tmp / "runs.parquet").drop(columns=TIMING)


def test_sigterm_stops_promptly_and_a_rerun_resumes(uninterrupted, tmp_path):
    config, expected = uninterrupted
    out = tmp_path / "runs.parquet"
    proc = start(config, out)
    wait_for_file(tmp_path / CKPT, proc)
    proc.send_signal(signal.SIGTERM)
    assert finish(proc) == 128 + signal.SIGTERM  # promptly: the log has no later epoch (below)
    log = out.with_suffix(".log").read_text()
    assert f"epoch {OPTIM['max_epochs']}/" not in log and "wrote" not in log  # promptly: not at the job's end
    last = log.splitlines()[-1]
    assert last.startswith("deltanet train: stopped by SIGTERM; a rerun resumes runs 1-2 after epoch "), last
    assert last.endswith(f"from {tmp_path / CKPT}")
    assert finish(start(config, out)) == 0
    assert "(resuming a checkpoint)" in out.with_suffix(".log").read_text()
    pd.testing.assert_frame_equal(pd.read_parquet(out).drop(columns=TIMING), expected)


def test_a_full_disk_keeps_the_previous_checkpoint_and_a_rerun_resumes(uninterrupted, tmp_path):
    """A checkpoint is written, the job stopped; rerun with a file size limit below the checkpoint's size (the disk
    'fills'): one line naming the file, the previous checkpoint byte for byte; the next rerun finishes."""
    config, expected = uninterrupted
    out, ckpt = tmp_path / "runs.parquet", tmp_path / CKPT
    proc = start(config, out)
    wait_for_file(ckpt, proc)
    proc.send_signal(signal.SIGTERM)
    assert finish(proc) == 128 + signal.SIGTERM
    before = ckpt.read_bytes()
    out.with_suffix(".log").write_text("")
    assert finish(start(config, out, limit_bytes=len(before) // 2)) == 1
    last = out.with_suffix(".log").read_text().splitlines()[-1]
    assert last == (f"deltanet train: error: could not write the checkpoint {ckpt} ([Errno 27] File too large); any "
                    f"earlier file there is intact; a rerun resumes runs 1-2 from {ckpt}")
    assert ckpt.read_bytes() == before and len(list(ckpt.parent.glob(".*.tmp"))) == 0
    assert finish(start(config, out)) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out).drop(columns=TIMING), expected)


def test_a_killed_job_with_a_garbage_checkpoint_finishes_and_keeps_the_bytes(uninterrupted, tmp_path):
    config, expected = uninterrupted
    out, ckpt = tmp_path / "runs.parquet", tmp_path / CKPT
    proc = start(config, out)
    wait_for_file(ckpt, proc)
    proc.send_signal(signal.SIGKILL)
    assert finish(proc) == -signal.SIGKILL
    garbage = b"\x00garbage, not a checkpoint" * 40
    ckpt.write_bytes(garbage)
    assert finish(start(config, out)) == 0
    aside = ckpt.with_name(ckpt.name + ".unusable")
    log = out.with_suffix(".log").read_text()
    assert f"checkpoint {ckpt} unusable (unreadable (" in log and f"moved to {aside}, restarting these runs" in log
    assert aside.read_bytes() == garbage  # nothing thrown away, also once the job is done
    assert f"kept what was set aside in {ckpt.parent}: {aside.name}" in log and sorted(ckpt.parent.iterdir()) == [aside]
    pd.testing.assert_frame_equal(pd.read_parquet(out).drop(columns=TIMING), expected)


def test_any_other_error_while_resuming_fails_the_job_and_keeps_the_checkpoint(uninterrupted, tmp_path):
    """A checkpoint of the right format and runs whose contents do not fit (here: no optimiser state) is not
    'unusable': the job fails with the cause, and the file stays where it is for a fix and a rerun."""
    config, _ = uninterrupted
    out, ckpt = tmp_path / "runs.parquet", tmp_path / CKPT
    proc = start(config, out)
    wait_for_file(ckpt, proc)
    proc.kill()
    finish(proc)
    payload = torch.load(ckpt, weights_only=False)
    del payload["live"]["optimizer"]
    torch.save(payload, ckpt)
    damaged = ckpt.read_bytes()
    with pytest.raises(TypeError, match="optimizer"):
        train(config, out)
    assert ckpt.read_bytes() == damaged and not ckpt.with_name(ckpt.name + ".unusable").exists()


def test_a_failed_run_file_write_is_one_line(tmp_path, monkeypatch):
    """The run file's writer failing (pyarrow's own error type) reaches the job as one OutputWriteError line."""
    def full_disk(self, path, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full_disk)
    with pytest.raises(OutputWriteError, match=r"could not write the run file .*runs\.parquet \(\[Errno 28\] No space"):
        job_module._write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "runs.parquet")
    assert not list(tmp_path.iterdir())


def test_a_resumed_group_lives_on_the_groups_device(uninterrupted, tmp_path):
    """A CPU checkpoint resumed by a group on another device: parameters, optimiser state and the runs' best models
    all land there. The device here is ``meta``: a CPU build of torch cannot copy onto fake CUDA tensors, and the
    CUDA test below resumes on a GPU."""
    config, _ = uninterrupted
    assert train(config, tmp_path / "runs.parquet", hooks=stop_after(2)) == 3
    meta = torch.device("meta")
    plan = dataclasses.replace(group_plan(), device=meta)
    group, states = resume_or_start(plan, SEQ_LEN, tmp_path / CKPT, None, log=lambda line: None)
    assert group.runs == plan.runs and all(s.epoch == 1 and s.best_model for s in states.values())
    tensors = [*group.fused.params.values(), *group.optimizer.exp_avg, group.optimizer.steps, group.optimizer.lr]
    tensors += [t for s in states.values() for t in s.best_model.values()]
    assert {t.device for t in tensors} == {meta}
    best = FusedModel.from_member_states(group.fused, [s.best_model for s in states.values()])
    assert {t.device for t in best.params.values()} == {meta}  # the models the train metrics are evaluated with


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs an NVIDIA GPU (CUDA not available)")])])  # fmt: skip
def test_a_resumed_group_equals_an_uninterrupted_one(device, tmp_path):
    """A group stopped after epoch 2 and resumed gives the uninterrupted group's per-epoch metrics, to the
    fused-vs-solo tolerance: on CUDA under bf16 autocast with captured steps (the GPU check runs it), on the CPU
    the same code in fp32."""
    from test_fused import RTOL

    plan = group_plan()
    plan = dataclasses.replace(plan, device=torch.device(device), optim={**plan.optim, "max_epochs": 5})
    setting = task_settings(TASK, "baseline", TASK_SIZE)[0]
    data = TensorData.from_datasets(make_datasets(setting), plan.device)

    def epochs(ckpt: Path, stop_at: int | None = None) -> dict:
        seen: dict = {}

        def record(group, run, state, metrics):
            seen.setdefault(run.index, []).append(metrics)
            if state.epoch == stop_at and run == group.runs[-1]:
                raise KeyboardInterrupt  # stops the group as a kill would, its checkpoint on disk

        with contextlib.suppress(KeyboardInterrupt):
            train_group(plan, data, ckpt, record, log=lambda line: None)
        return seen

    whole = epochs(tmp_path / "whole.pt")
    first = epochs(tmp_path / "resumed.pt", stop_at=2)
    rest = epochs(tmp_path / "resumed.pt")
    for run in plan.runs:
        resumed = first[run.index] + rest[run.index]
        assert [len(first[run.index]), len(resumed)] == [2, len(whole[run.index])]
        for got, want in zip(resumed, whole[run.index]):
            for key in ("train_loss", "acc", "ppl", "loss"):
                assert got[key] == pytest.approx(want[key], rel=RTOL, nan_ok=True), key


def test_a_job_rerun_after_an_edit_to_the_shared_code_sets_its_checkpoints_aside(tmp_path):
    """A job killed mid-way, then rerun after an edit to deltanet/training/loop.py (in a copy of the package): the
    checkpoint folder of the old code is set aside and named, never resumed, and every row carries the new code's
    hash, the one the workflow's shared_code param holds."""
    from deltanet.import_graph import train_shared_code_sha256
    from deltanet.io import CRASH_ENV

    shutil.copytree(REPO / "deltanet", tmp_path / "deltanet", ignore=shutil.ignore_patterns("__pycache__"))
    config, out = write_config(tmp_path, max_epochs=3), tmp_path / "runs.parquet"
    cmd = [sys.executable, "-m", "deltanet", "train", "--variant", "delta_net_4layer", "--task", TASK, "--config",
           str(config), "--out", str(out), "--scale", "test", "--device", "cpu", "--threads", "1"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}  # the copy, ahead of the editable install
    killed = subprocess.run(cmd, cwd=tmp_path, env={**env, CRASH_ENV: "SIGKILL:8"}, capture_output=True, text=True)
    ckpt_dir = tmp_path / "runs.parquet.ckpt"
    assert killed.returncode == -signal.SIGKILL and (ckpt_dir / "runs-0001-0002.pt").exists(), killed.stdout
    old = train_shared_code_sha256(tmp_path / "deltanet", "delta_net_4layer", TASK)
    with open(tmp_path / "deltanet" / "training" / "loop.py", "a") as loop:
        loop.write("\n# an edit: the engine's code changed\n")
    new = train_shared_code_sha256(tmp_path / "deltanet", "delta_net_4layer", TASK)
    rerun = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    aside = ckpt_dir.with_name(ckpt_dir.name + ".unusable")
    assert (f"checkpoint dir {ckpt_dir} belongs to a different job configuration or code: moved to {aside}, "
            "starting afresh") in rerun.stdout
    assert "(resuming a checkpoint)" not in rerun.stdout and (aside / "runs-0001-0002.pt").exists()
    assert old != new and set(pd.read_parquet(out)["shared_code_sha256"]) == {new}
