"""Training engine: a job end to end, kill-and-resume, divergence, early stop, best-epoch selection, bad arguments.

Every job here uses a very small scale written to tmp_path (d=16, 64 training sequences of length 16), so each runs
in well under a second of compute.
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from deltanet.runs import RUN_COLUMNS, STOP_REASONS, validate_runs
from deltanet.cli.train import main, make_job, parse_args
from deltanet.training.job import JobHooks, run_job
from deltanet.training import protocol
from deltanet.variants.catalog import variant_names

REPO = Path(__file__).resolve().parents[1]
TIMING = ["wall_seconds", "tokens_per_second", "peak_memory_mb", "finished_at"]
TASK = "context_recall"


def write_config(tmp_path: Path, **optim) -> Path:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["scales"]["test"] = {
        "grid": "baseline",
        "model": {"dim": 16, "num_heads": 2, "head_dim": 8, "chunk_size": 16},
        "optim": {"batch_size": 32, "max_epochs": 3, "lrs": [1e-2, 5e-3], "weight_decays": [0.0], "min_lr": 1e-6,
                  "stop_accuracy": 0.999, **optim},
        "task_overrides": {TASK: {"seq_len": 16, "num_train_examples": 64, "num_test_examples": 32}},
        "resources": {"gpu": 0, "mem_mb": 1000, "runtime_min": 1},
    }  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Killed(Exception):
    """What ``stop_after`` raises: the job ends there, checkpoints kept, as if the process had been killed."""


def stop_after(epochs: int) -> JobHooks:
    """Stop the job once ``epochs`` epochs of this invocation are trained and checkpointed."""

    def after_epoch(done: int) -> None:
        if done >= epochs:
            raise Killed

    return JobHooks(after_epoch=after_epoch)


def nan_from(run: int, epoch: int) -> JobHooks:
    """Make run ``run``'s training loss NaN from ``epoch`` on (1-based)."""
    return JobHooks(loss=lambda r, e, loss: loss * math.nan if r == run and e >= epoch else loss)


def train(config: Path, out: Path, *extra: str, variant: str = "delta_net_4layer", task: str = TASK,
          hooks: JobHooks | None = None) -> int:  # fmt: skip
    """``deltanet train`` on the test scale: the CLI itself, or with ``hooks`` its job (3 when ``Killed``)."""
    args = ["--variant", variant, "--task", task, "--config", str(config), "--out", str(out), "--scale", "test",
            "--device", "cpu", *extra]  # fmt: skip
    if hooks is None:
        return main(args)
    try:
        run_job(make_job(parse_args(args)), hooks)
    except Killed:
        return 3
    return 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted job of 2 runs × 3 epochs: (config path, its rows, output path)."""
    tmp = tmp_path_factory.mktemp("reference")
    config, out = write_config(tmp), tmp / "runs.parquet"
    assert train(config, out) == 0
    return config, pd.read_parquet(out), out


def test_job_writes_every_column_and_cleans_up(reference):
    config, df, out = reference
    validate_runs(df, "reference")
    assert len(df) == 2 and list(df["lr"]) == [1e-2, 5e-3]
    assert list(df.columns[: len(RUN_COLUMNS)]) == list(RUN_COLUMNS)
    setting_fields = set(yaml.safe_load(df["setting_json"][0]))  # JSON is YAML
    assert setting_fields and setting_fields <= set(df.columns)
    assert {"seq_len", "num_train_examples"} <= setting_fields and (df["seq_len"] == 16).all()
    row = df.iloc[0]
    assert (row.variant, row.mixer, row.task, row.scale, row.seed) == ("delta_net_4layer", "delta", TASK, "test", 12345)
    assert row.stop_reason in STOP_REASONS
    assert row.epochs_run == 3 or row.stop_reason == "early_stopped"
    assert 1 <= row.best_epoch <= row.epochs_run
    assert 0 <= row.test_acc <= 1 and 0 <= row.train_acc <= 1 and row.test_ppl >= 1
    assert row.num_parameters > 0 and row.tokens_per_second > 0 and row.peak_memory_mb > 0
    assert len(row.variant_source_sha256) == 64 and len(row.config_sha256) == 64
    assert row.device.startswith("cpu") and row.torch_version and row.python_version
    assert row.profile == ""  # the test scale names no fidelity profile
    assert not out.with_name(out.name + ".ckpt").exists()  # checkpoints removed after success


def test_kill_and_resume_matches_uninterrupted_run(reference, tmp_path, capsys):
    """The 2 runs train as one fused group; killed after its epoch 2 (4 run-epochs), the rerun resumes epoch 3."""
    config, expected, _ = reference
    out = tmp_path / "runs.parquet"
    ckpt = tmp_path / "runs.parquet.ckpt"
    assert train(config, out, hooks=stop_after(4)) == 3
    assert not out.exists() and (ckpt / "runs-0001-0002.pt").exists() and not (ckpt / "finished.parquet").exists()
    capsys.readouterr()
    assert train(config, out) == 0
    log = capsys.readouterr().out
    assert "(resuming a checkpoint)" in log
    assert "run 2/2 epoch 2/3" not in log and "run 2/2 epoch 3/3" in log  # resumed after epoch 2
    got = pd.read_parquet(out)
    pd.testing.assert_frame_equal(got.drop(columns=TIMING), expected.drop(columns=TIMING))  # CPU: bitwise
    assert not ckpt.exists()


def test_kill_and_resume_after_a_member_left_the_group(tmp_path, capsys):
    """Run 1 diverges in epoch 1 and leaves the group; a kill after epoch 2 and a rerun give the same rows."""
    config = write_config(tmp_path)
    hooks = nan_from(run=1, epoch=1)
    assert train(config, tmp_path / "whole.parquet", hooks=hooks) == 0
    out = tmp_path / "runs.parquet"
    killed = JobHooks(after_epoch=stop_after(3).after_epoch, loss=hooks.loss)  # epoch 1: 2 lines, epoch 2: 1
    assert train(config, out, hooks=killed) == 3
    capsys.readouterr()
    assert train(config, out, hooks=hooks) == 0
    log = capsys.readouterr().out
    assert "run 1/2 epoch" not in log and "run 2/2 epoch 2/3" not in log and "run 2/2 epoch 3/3" in log
    expected = pd.read_parquet(tmp_path / "whole.parquet")
    got = pd.read_parquet(out)
    assert list(got["stop_reason"])[0] == "diverged"
    pd.testing.assert_frame_equal(got.drop(columns=TIMING), expected.drop(columns=TIMING))


def test_unreadable_checkpoint_restarts_only_that_run(reference, tmp_path, capsys):
    config, expected, _ = reference
    out, ckpt = tmp_path / "runs.parquet", tmp_path / "runs.parquet.ckpt"
    assert train(config, out, hooks=stop_after(1)) == 3
    (ckpt / "runs-0001-0002.pt").write_bytes(b"not a checkpoint")
    assert train(config, out) == 0
    assert "unusable" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_parquet(out).drop(columns=TIMING), expected.drop(columns=TIMING))


def test_nan_loss_gives_diverged_row_and_job_goes_on(tmp_path):
    config, out = write_config(tmp_path), tmp_path / "runs.parquet"
    assert train(config, out, hooks=nan_from(run=1, epoch=2)) == 0  # run 1 diverges in epoch 2
    df = pd.read_parquet(out)
    validate_runs(df, str(out))
    first, second = df.iloc[0], df.iloc[1]
    assert (first.stop_reason, first.epochs_run, first.best_epoch) == ("diverged", 2, 1)
    assert math.isfinite(first.test_acc) and math.isfinite(first.test_ppl)  # the last finite epoch's metrics
    assert second.stop_reason != "diverged" and second.epochs_run >= 1


def test_nan_in_first_epoch_gives_nan_metrics(tmp_path):
    config, out = write_config(tmp_path, lrs=[1e-2], max_epochs=2), tmp_path / "runs.parquet"
    assert train(config, out, hooks=nan_from(run=1, epoch=1)) == 0
    row = pd.read_parquet(out).iloc[0]
    assert (row.stop_reason, row.epochs_run, row.best_epoch) == ("diverged", 1, 0)
    assert math.isnan(row.test_acc) and math.isnan(row.train_acc)


def test_early_stop_fires_at_the_threshold(tmp_path):
    config, out = write_config(tmp_path, lrs=[1e-2], stop_accuracy=1e-6), tmp_path / "runs.parquet"
    assert train(config, out) == 0
    row = pd.read_parquet(out).iloc[0]
    assert (row.stop_reason, row.epochs_run, row.best_epoch) == ("early_stopped", 1, 1)


def test_best_epoch_and_stop_rules():
    nan, inf = math.nan, math.inf
    assert protocol.best_epoch_index([3.0, 2.0, 2.5, 2.0, 4.0]) == 1  # lowest; ties keep the earlier epoch
    assert protocol.best_epoch_index([nan, 5.0, nan, 4.0]) == 3
    assert protocol.best_epoch_index([inf, 7.0]) == 1
    assert protocol.best_epoch_index([nan, nan]) is None and protocol.best_epoch_index([]) is None
    assert protocol.should_stop_early(0.999, 0.999) and not protocol.should_stop_early(0.9989, 0.999)
    assert protocol.is_diverged(nan) and protocol.is_diverged(inf) and not protocol.is_diverged(1e30)


def test_job_reports_the_lowest_perplexity_epoch(tmp_path, monkeypatch):
    """Scripted test metrics per epoch (ppl 5, 3, 4): the row holds epoch 2's, as ``best_epoch_index`` picks."""
    import deltanet.training.loop as loop

    ppls, accs = [5.0, 3.0, 4.0], [0.50, 0.20, 0.90]
    script = iter([[{"acc": a, "acc_micro": a, "ppl": p, "loss": math.log(p)}] for a, p in zip(accs, ppls)])
    train_eval = [{"acc": 0.7, "acc_micro": 0.7, "ppl": 2.0, "loss": math.log(2.0)}]
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: next(script, train_eval))
    config, out = write_config(tmp_path, lrs=[1e-2]), tmp_path / "runs.parquet"
    assert train(config, out) == 0
    row = pd.read_parquet(out).iloc[0]
    assert row.best_epoch == protocol.best_epoch_index(ppls) + 1 == 2
    assert (row.test_acc, row.test_ppl, row.epochs_run, row.stop_reason) == (0.20, 3.0, 3, "max_epochs")
    assert row.train_acc == 0.7  # train metrics are evaluated on the best epoch's model at the end


@pytest.mark.parametrize("eval_batch", [None, 32])
def test_scoring_batches_follow_eval_batch_size(tmp_path, monkeypatch, eval_batch):
    """Training steps take ``batch_size`` examples; every evaluation (test each epoch, train at the end) runs in
    batches of ``eval_batch_size``, which defaults to ``batch_size`` (MAD scores in its loader's batches)."""
    import deltanet.training.loop as loop

    steps, scored = [], []
    real_step, real_evaluate = loop.train_step, loop.evaluate
    monkeypatch.setattr(loop, "train_step", lambda model, opt, x, *a, **k: steps.append(x.shape[1]) or real_step(
        model, opt, x, *a, **k))  # fmt: skip
    monkeypatch.setattr(loop, "evaluate", lambda logits_of, inputs, targets, batch, *a, **k: scored.append(
        (len(inputs), batch)) or real_evaluate(logits_of, inputs, targets, batch, *a, **k))  # fmt: skip
    optim = {"batch_size": 16, "max_epochs": 2, "lrs": [1e-2]}
    if eval_batch is not None:
        optim["eval_batch_size"] = eval_batch
    config, out = write_config(tmp_path, **optim), tmp_path / "runs.parquet"
    assert train(config, out) == 0
    assert steps == [16] * 8  # 64 examples, 2 epochs
    assert scored == [(32, eval_batch or 16)] * 2 + [(64, eval_batch or 16)]


def _bad_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "case, expect",
    [
        ("variant", "unknown variant 'delta_net_4layr'"),
        ("task", "unknown task 'recall'"),
        ("scale", "unknown scale 'huge'"),
        ("output", "not writable"),
        ("yaml", "not valid YAML"),
        ("schema", "scales.test.optim.batch_size"),
        ("missing", "does not exist"),
    ],
)
def test_bad_arguments_give_one_clear_error(case, expect, tmp_path, capsys):
    config, out = write_config(tmp_path), tmp_path / "runs.parquet"
    args = dict(variant="delta_net_4layer", task=TASK)
    extra = []
    if case in ("variant", "task"):
        args[case] = {"variant": "delta_net_4layr", "task": "recall"}[case]
    elif case == "scale":
        extra = ["--scale", "huge"]
    elif case == "output":
        (tmp_path / "file").write_text("")
        out = tmp_path / "file" / "runs.parquet"  # parent is a file
    elif case == "yaml":
        config = _bad_config(tmp_path, "scale: [tiny\n")
    elif case == "schema":
        config = _bad_config(tmp_path, config.read_text().replace("batch_size: 32", "batch_size: -1"))
    elif case == "missing":
        config = tmp_path / "nope.yaml"
    capsys.readouterr()
    assert train(config, out, *extra, **args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deltanet train: error:") and expect in err[0], err


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("variant", "delta_net_4layr", "unknown variant 'delta_net_4layr'; did you mean 'delta_net_4layer'? "
                                       "(deltanet variants lists all {variants})"),
        ("task", "compresion", "unknown task 'compresion'; did you mean 'compression'? (deltanet tasks lists all 6)"),
        ("scale", "tes", "unknown scale 'tes'; did you mean 'test'? (allowed: {scales})"),
    ],
    ids=["variant", "task", "scale"],
)  # fmt: skip
def test_a_misspelt_name_gets_the_closest_match_in_one_line(option, value, message, tmp_path, capsys):
    config = write_config(tmp_path)
    args = {option: value} if option != "scale" else {}
    extra = ["--scale", value] if option == "scale" else []
    capsys.readouterr()
    assert train(config, tmp_path / "runs.parquet", *extra, **args) == 2
    names = {"variants": len(variant_names()), "scales": ", ".join(yaml.safe_load(config.read_text())["scales"])}
    assert capsys.readouterr().err.splitlines() == [f"deltanet train: error: {message.format(**names)}"]


def test_command_line_error_has_no_traceback(tmp_path):
    """As a process (malloc variables unset, so the re-exec path runs): exit 2 and one line on stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["PYTHONPATH"] = str(REPO)
    cmd = [sys.executable, "-m", "deltanet", "train", "--variant", "nope", "--task", TASK,
           "--config", str(write_config(tmp_path)), "--out", str(tmp_path / "o.parquet")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "unknown variant 'nope'" in proc.stderr, proc.stderr


def test_a_gpu_scale_where_no_gpu_is_visible_refuses_in_one_line_and_writes_nothing(tmp_path):
    """The mission's command without --nv: the host's nvidia-smi lists GPUs, the job sees none. With the default
    device a GPU scale (smoke: resources.gpu 1) refuses: exit 2, one line naming what it found, no file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\n" + "".join(
        f'echo "GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i}{i}{i}{i}aaaa-0000)"\n' for i in range(3)))
    (bin_dir / "nvidia-smi").chmod(0o755)
    out = tmp_path / "results" / "runs.parquet"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "PYTHONPATH": str(REPO)}  # fmt: skip
    cmd = [sys.executable, "-m", "deltanet", "train", "--variant", "delta_net_4layer", "--task", TASK, "--config",
           str(REPO / "config.yaml"), "--scale", "smoke", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout
    assert proc.stderr == (
        "deltanet train: error: --device: this scale asks for 1 GPU(s) (resources.gpu), but torch sees no CUDA device "
        "(CUDA_VISIBLE_DEVICES=''; torch built without CUDA; nvidia-smi lists 3 GPU(s)): run it where a GPU is visible "
        "(under Apptainer with --nv: snakemake --singularity-args=--nv), or name --device cpu to train on the CPU "
        "anyway\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]  # nothing written
