"""Fused runs: a group of R members trains each member as its solo run would train (deltanet/training/loop.py).

Equality tolerance (fp32, CPU): a fused member's per-epoch train loss and test metrics equal its solo run's to
rtol 1e-4. Fused and solo runs execute the same ops, but batched over members (bmm instead of mm, one conv of R·C
channels), whose blocking may round differently: ~1e-7 per op, compounded over a few dozen AdamW steps at lr up to
1e-2. A member mixing with another would be off by the members' differences (1e-2 and more at these lrs).
"""

import dataclasses
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_train import TASK, TIMING, nan_from, stop_after, train, write_config

import deltanet.training.job as job_module
import deltanet.training.loop as loop
from deltanet.config import ConfigError, load_config
from deltanet.model import LanguageModel, ModelConfig
from deltanet.tasks import make_datasets, task_settings
from deltanet.training.capture import CapturedStep, capture_enabled
from deltanet.training.fused import FusedModel, member_losses
from deltanet.training.loop import GroupPlan, RunPlan, TensorData, train_group, train_step
from deltanet.training.optim import StackedAdamW

RTOL = 1e-4
SHAPE = {"dim": 16, "num_heads": 2, "head_dim": 8, "chunk_size": 8}
OPTIM = {"batch_size": 16, "max_epochs": 3, "min_lr": 1e-6, "stop_accuracy": 0.999}
TINY_TASK = {"seq_len": 16, "num_train_examples": 64, "num_test_examples": 32}


@pytest.fixture(scope="module")
def data():
    setting = task_settings(TASK, "baseline", TINY_TASK)[0]
    return TensorData.from_datasets(make_datasets(setting), torch.device("cpu")), int(setting.fields["vocab_size"])


def group(runs: list[RunPlan], vocab: int, variant: str = "delta_net_4layer", **optim) -> GroupPlan:
    return GroupPlan(runs, total=len(runs), label="baseline", vocab_size=vocab,
                     model_kwargs={**SHAPE, "variant": variant, "kernels": "naive"}, autoencoder=False,
                     optim={**OPTIM, **optim}, device=torch.device("cpu"))  # fmt: skip


def train_logged(plan: GroupPlan, data: TensorData, tmp: Path, loss_hook=None) -> tuple[list[dict], dict]:
    """(results, {run index: [per-epoch metrics]}) of one group, trained from scratch."""
    epochs: dict[int, list] = {}
    def record(group, run, state, metrics):
        epochs.setdefault(run.index, []).append(metrics)

    results = train_group(plan, data, tmp / "group.pt", record, loss_hook, log=lambda line: None)
    (tmp / "group.pt").unlink()
    return results, epochs


def assert_member_equals_solo(fused: list[dict], solo: list[dict]) -> None:
    assert len(fused) == len(solo)
    for f, s in zip(fused, solo):
        for key in ("train_loss", "acc", "acc_micro", "ppl", "loss"):
            assert f[key] == pytest.approx(s[key], rel=RTOL, nan_ok=True), key


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (CUDA not available)")
SIX = [RunPlan(i, lr, wd, 12345) for i, (lr, wd) in enumerate(
    [(lr, wd) for lr in (1e-2, 5e-3, 1e-3) for wd in (0.0, 0.1)], start=1)]  # fmt: skip
TWO_SEEDS = [RunPlan(1, 5e-3, 0.0, 1), RunPlan(2, 5e-3, 0.0, 2)]


@pytest.mark.parametrize("variant, runs", [
    ("delta_net_4layer", SIX),
    ("delta_net_4layer_momentum_state_update_in_for_loop", SIX),
    ("gated_delta_net_4layer", SIX),
    ("delta_net_4layer", TWO_SEEDS),
], ids=["baseline-3lr-2wd", "loop-variant-3lr-2wd", "gated-3lr-2wd", "baseline-2-seeds"])  # fmt: skip
def test_a_fused_group_equals_its_solo_runs(variant, runs, data, tmp_path):
    tensors, vocab = data
    results, fused = train_logged(group(runs, vocab, variant), tensors, tmp_path)
    for i, run in enumerate(runs):
        solo_results, solo = train_logged(group([run], vocab, variant), tensors, tmp_path)
        assert_member_equals_solo(fused[run.index], solo[run.index])
        for key in ("test_acc", "test_ppl", "train_acc", "train_loss", "best_epoch", "epochs_run"):
            assert results[i][key] == pytest.approx(solo_results[0][key], rel=RTOL), key
        assert (results[i]["group_size"], solo_results[0]["group_size"]) == (len(runs), 1)
    losses = [fused[r.index][-1]["train_loss"] for r in runs]
    assert max(losses) - min(losses) > 100 * RTOL * max(losses)  # the members really differ


def test_a_nan_member_leaves_the_group_and_reaches_no_other(data, tmp_path, monkeypatch):
    """Run 2's loss turns NaN in epoch 1: it is diverged after that epoch and dropped (later steps run 2 members);
    runs 1 and 3 train exactly as the group of the two of them does."""
    tensors, vocab = data
    runs = SIX[:3]
    widths = []
    real_step = loop.train_step
    monkeypatch.setattr(loop, "train_step",
                        lambda fused, *a, **k: widths.append(fused.size) or real_step(fused, *a, **k))  # fmt: skip
    results, epochs = train_logged(group(runs, vocab), tensors, tmp_path,
                                   lambda run, epoch, loss: loss * math.nan if run == 2 else loss)  # fmt: skip
    assert (results[1]["stop_reason"], results[1]["epochs_run"], results[1]["best_epoch"]) == ("diverged", 1, 0)
    assert math.isnan(results[1]["test_acc"]) and 2 not in {r for r in epochs if len(epochs[r]) > 1}
    assert widths == [3] * 4 + [2] * 8  # 4 steps an epoch; a stopped member costs nothing afterwards
    _, pair = train_logged(group([runs[0], runs[2]], vocab), tensors, tmp_path)
    for index in (1, 3):
        assert_member_equals_solo(epochs[index], pair[index])


def test_a_member_that_reaches_stop_accuracy_stops_alone(data, tmp_path, monkeypatch):
    """Member 1's scripted test accuracy reaches stop_accuracy in epoch 1: it stops there (early_stopped, its row
    from epoch 1) while the others train all 3 epochs as they would have."""
    tensors, vocab = data
    runs = SIX[:3]
    _, unscripted = train_logged(group(runs, vocab), tensors, tmp_path)
    real_evaluate, calls = loop.evaluate, []

    def scripted(*args, **kwargs):
        scores = real_evaluate(*args, **kwargs)
        calls.append(len(scores))
        if len(calls) == 1:
            scores[0] = {**scores[0], "acc": 1.0}
        return scores

    monkeypatch.setattr(loop, "evaluate", scripted)
    results, epochs = train_logged(group(runs, vocab), tensors, tmp_path)
    assert [(r["stop_reason"], r["epochs_run"]) for r in results] == [("early_stopped", 1), ("max_epochs", 3),
                                                                       ("max_epochs", 3)]  # fmt: skip
    assert results[0]["test_acc"] == 1.0 and results[0]["best_epoch"] == 1
    assert calls == [3, 1, 2, 2, 2]  # tests: epoch 1 (3 members), 2 and 3 (2); train metrics of the best models: 1, 2
    for index in (2, 3):
        assert_member_equals_solo(epochs[index], unscripted[index])


def test_stopping_runs_leave_with_their_graphs_before_finish_evaluates(data, tmp_path, monkeypatch):
    """finish() evaluates the best models eagerly: the graphs recorded for the members that stop (their memory
    pools on a GPU) are gone before it runs, also when the last runs stop. On CPU nothing is captured, so a recorded
    graph is stood in by a marker in each step's table."""
    tensors, vocab = data
    seen = []
    real_finish, real_new_steps = loop.finish, loop.Group._new_steps

    def new_steps(group):
        real_new_steps(group)
        group.step.graphs["shape"] = group.eval_step.graphs["shape"] = "graph of the old members"

    def finish(group, stopped, states, data):
        seen.append((len(stopped), len(group.runs), dict(group.step.graphs), dict(group.eval_step.graphs)))
        real_finish(group, stopped, states, data)

    monkeypatch.setattr(loop.Group, "_new_steps", new_steps)
    monkeypatch.setattr(loop, "finish", finish)
    train_logged(group([RunPlan(1, 1e-2, 0.0, 12345), RunPlan(2, 5e-3, 0.0, 7)], vocab), tensors, tmp_path)
    stops = [entry for entry in seen if entry[0]]
    assert stops == [(2, 0, {}, {})]  # both stop at max_epochs: the group is empty and holds no graph


def test_fuse_runs_off_trains_groups_of_one_with_the_same_rows(tmp_path):
    (tmp_path / "solo").mkdir()
    config_fused, config_solo = write_config(tmp_path), write_config(tmp_path / "solo", fuse_runs=False)
    assert train(config_fused, tmp_path / "fused.parquet") == 0
    assert train(config_solo, tmp_path / "solo.parquet") == 0
    fused, solo = pd.read_parquet(tmp_path / "fused.parquet"), pd.read_parquet(tmp_path / "solo.parquet")
    assert list(fused["group_size"]) == [2, 2] and list(solo["group_size"]) == [1, 1]
    assert not fused["captured"].any()
    metrics = ["test_acc", "test_ppl", "test_loss", "train_acc", "train_loss"]
    pd.testing.assert_frame_equal(fused[metrics], solo[metrics], rtol=RTOL, atol=0)


def test_a_group_that_does_not_fit_is_split_and_the_halves_resume_its_checkpoint(tmp_path, monkeypatch, capsys):
    """A group of 2 runs out of memory in epoch 2: it is split into 1 + 1 (one line), each half resumes from the
    group's epoch-1 checkpoint; a job killed in the first half resumes the halves, not the group. The rows are the
    unsplit group's."""
    config = write_config(tmp_path)
    assert train(config, tmp_path / "whole.parquet") == 0
    real = job_module.train_group

    def small_gpu(plan, data, ckpt, on_epoch, *args):
        def oom_in_epoch_2(group, run, state, metrics):
            on_epoch(group, run, state, metrics)
            if len(plan.runs) > 1 and state.epoch == 1 and run == group.runs[-1]:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        return real(plan, data, ckpt, oom_in_epoch_2, *args)

    monkeypatch.setattr(job_module, "train_group", small_gpu)
    capsys.readouterr()
    assert train(config, tmp_path / "split.parquet", hooks=stop_after(3)) == 3  # epoch 1 of both, 2 of run 1
    log = capsys.readouterr().out
    lines = [line for line in log.splitlines() if "does not fit" in line]
    assert len(lines) == 1 and lines[0].startswith("runs 1-2: a fused group of 2 does not fit on cpu")
    assert lines[0].endswith("(CUDA out of memory. Tried to allocate 2.00 GiB); splitting it into 1 + 1; each half "
                             "resumes from its share of runs-0001-0002.pt")
    assert "run 1/2 context_recall/baseline: lr=0.01 wd=0 seed=12345 (resuming a checkpoint)" in log
    ckpt_dir = tmp_path / "split.parquet.ckpt"
    assert sorted(p.name for p in ckpt_dir.glob("*.pt")) == ["runs-0001-0001.pt", "runs-0002-0002.pt"]
    monkeypatch.setattr(job_module, "train_group", real)
    assert train(config, tmp_path / "split.parquet") == 0
    log = capsys.readouterr().out
    assert "runs 1-2: split into 1 + 1 by an earlier attempt; resuming the parts" in log
    assert log.count("(resuming a checkpoint)") == 2
    whole, split = pd.read_parquet(tmp_path / "whole.parquet"), pd.read_parquet(tmp_path / "split.parquet")
    assert list(split["group_size"]) == [1, 1]
    metrics = ["test_acc", "test_ppl", "train_loss", "best_epoch", "epochs_run"]
    pd.testing.assert_frame_equal(whole[metrics], split[metrics], rtol=RTOL, atol=0)


@pytest.mark.parametrize("variant", ["delta_net_4layer", "gated_delta_net_4layer"], ids=["delta", "gated"])
def test_the_triton_path_fused_equals_solo(variant, tmp_path):
    """The kernels (Triton interpreter, fp32) under vmap, for both rules (g = None, gated): members fold into the
    kernels' batch. The interpreter's time grows with launches × batch × heads, so one mixer, one head and batches
    of 2 (a fold that mixed members with batch rows would still show), one step an epoch for 2 epochs."""
    setting = task_settings(TASK, "baseline", {**TINY_TASK, "num_train_examples": 2, "num_test_examples": 2})[0]
    tensors = TensorData.from_datasets(make_datasets(setting), torch.device("cpu"))
    runs = [RunPlan(1, 1e-2, 0.0, 12345), RunPlan(2, 5e-3, 0.1, 7)]
    kw = dict(max_epochs=2, batch_size=2)
    kernels = {**SHAPE, "num_heads": 1, "chunk_size": 16, "layers": ("mixer", "swiglu"), "kernels": "triton",
               "variant": variant}  # fmt: skip
    plan = dataclasses.replace(group(runs, int(setting.fields["vocab_size"]), **kw), model_kwargs=kernels)
    _, fused = train_logged(plan, tensors, tmp_path)
    for run in runs:
        _, solo = train_logged(dataclasses.replace(plan, runs=[run]), tensors, tmp_path)
        assert_member_equals_solo(fused[run.index], solo[run.index])


def test_the_training_step_needs_no_host_value(data):
    """Under FakeTensorMode no tensor has a value: a step that reads one (``.item()``, ``if tensor:``) raises there,
    which is what would break, or silently synchronise, a captured CUDA graph."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    cfg = ModelConfig(vocab_size=16, variant="delta_net_4layer_adam_state_update_in_for_loop", **SHAPE)
    real = FusedModel.stack([LanguageModel(cfg) for _ in range(3)])
    mode = FakeTensorMode()
    fake = {n: mode.from_tensor(p).requires_grad_() for n, p in real.params.items()}
    with mode:
        fused = FusedModel(real.base, fake, {n: mode.from_tensor(b) for n, b in real.buffers.items()})
        optimizer = StackedAdamW(fused.parameters(), lr=torch.full((3,), 1e-3), weight_decay=torch.zeros(3))
        x = torch.randint(0, 16, (3, 4, 16))
        optimizer.lr.copy_(torch.full((3,), 5e-4, dtype=torch.float64))  # the epoch's lr, in place
        losses = train_step(fused, optimizer, x, x.roll(-1, -1), torch.bfloat16)
        assert losses.shape == (3,)
        with pytest.raises(Exception, match="_local_scalar_dense"):
            losses.sum().item()  # the check can fail: a host read raises here


def test_capture_modes_and_the_eager_fallback():
    lines = []
    assert capture_enabled("on", torch.device("cpu"), lines.append) is False
    assert lines == ["optim.capture: on, but CUDA graphs need a CUDA device (cpu here): steps run eagerly"]
    cpu = torch.device("cpu")
    assert capture_enabled("auto", cpu) is False and capture_enabled("off", cpu) is False
    with pytest.raises(ValueError, match="optim.capture must be one of auto, on, off; got 'yes'"):
        capture_enabled("yes", torch.device("cpu"))
    step = CapturedStep(lambda x: x * 2, enabled=False, shapes={(2,)}, name="step")
    assert torch.equal(step(torch.ones(2)), torch.full((2,), 2.0)) and not step.captured


@pytest.mark.parametrize("key, value, allowed", [("fuse_runs", "yes", "boolean"), ("capture", "sometimes", "auto")])
def test_bad_fuse_and_capture_values_get_one_line(key, value, allowed, tmp_path):
    path = write_config(tmp_path, **{key: value})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "\n" not in message and key in message and repr(value) in message and allowed in message, message


@pytest.mark.cuda
@needs_cuda
def test_captured_group_equals_eager_on_cuda(data, tmp_path):
    """On CUDA: the same group with captured steps and eagerly, bf16 autocast: per-epoch metrics equal."""
    tensors, vocab = data
    cuda = torch.device("cuda")
    tensors = TensorData(*(getattr(tensors, f.name).to(cuda) for f in dataclasses.fields(TensorData)))
    runs = SIX[:4]
    results = {}
    for mode in ("on", "off"):
        plan = dataclasses.replace(group(runs, vocab, capture=mode), device=cuda)
        results[mode] = train_logged(plan, tensors, tmp_path)
    assert all(r["captured"] for r in results["on"][0]) and not any(r["captured"] for r in results["off"][0])
    for run in runs:
        assert_member_equals_solo(results["on"][1][run.index], results["off"][1][run.index])


@pytest.mark.cuda
@needs_cuda
def test_a_failing_capture_warns_once_and_runs_eagerly(monkeypatch):
    lines = []
    monkeypatch.setattr(torch.cuda, "graph", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no capture")))
    step = CapturedStep(lambda x: x + 1, enabled=True, shapes={(4,)}, name="training step", log=lines.append)
    x = torch.zeros(4, device="cuda")
    outs = [step(x) for _ in range(6)]
    assert all(torch.equal(o, torch.ones(4, device="cuda")) for o in outs)
    assert len(lines) == 1
    assert "capturing the training step as a CUDA graph failed (RuntimeError: no capture)" in lines[0]
    assert step.failure and not step.captured


def test_member_losses_are_each_members_own_cross_entropy():
    """Each member's mean over its own scored tokens (members score different numbers of tokens), and its gradient
    reaches only its own logits."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 2, 5, 7, generator=gen, requires_grad=True)
    targets = torch.randint(0, 7, (3, 2, 5), generator=gen)
    targets[0, 0, :4], targets[2, 1, :] = -100, -100
    solo = torch.stack([torch.nn.functional.cross_entropy(logits[i].reshape(-1, 7), targets[i].reshape(-1),
                                                          ignore_index=-100) for i in range(3)])  # fmt: skip
    losses = member_losses(logits, targets)
    torch.testing.assert_close(losses, solo, rtol=1e-6, atol=0)
    losses[1].backward()
    assert logits.grad[[0, 2]].abs().sum() == 0 and logits.grad[1].abs().sum() > 0
