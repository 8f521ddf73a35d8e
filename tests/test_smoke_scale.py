"""The smoke scale: every full-scale setting at its real shapes (sequence lengths, vocabularies, model, chunking)
through the training loop on the GPU precision path (bf16 autocast, here on CPU), with smaller batches."""

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from deltanet.tasks import TASK_IDS, task_settings
from deltanet.cli.smoke import main
from deltanet.training.capture import WARMUP_CALLS
from deltanet.training.smoke import BASELINES, smoke, summary_markdown
from deltanet.variants import variant_names

REPO = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())
# only these may differ from the full scale: the smoke scale is the full one, cut short
SMOKE_ONLY = {"max_epochs", "max_steps_per_epoch", "max_eval_batches"}
# the largest setting of these tasks, which the other variants run at: (field, value)
LARGEST = {"selective_copy": ("seq_len", 1024), "memorization": ("vocab_size", 8192)}


def test_smoke_scale_is_the_full_scale_cut_short():
    full, smoke_ = CONFIG["scales"]["full"], CONFIG["scales"]["smoke"]
    assert smoke_["grid"] == full["grid"] and smoke_["model"] == full["model"] and smoke_["profile"] == full["profile"]
    assert smoke_["task_overrides"] == full["task_overrides"]
    changed = {k for k in set(full["optim"]) | set(smoke_["optim"]) if full["optim"].get(k) != smoke_["optim"].get(k)}
    assert changed <= SMOKE_ONLY, changed
    assert smoke_["optim"]["max_epochs"] == 1 and smoke_["optim"]["lrs"][0] in full["optim"]["lrs"]
    assert sum(len(task_settings(t, "mad", {})) for t in TASK_IDS) == 66


@pytest.mark.slow
@pytest.mark.parametrize("task", TASK_IDS)
def test_every_setting_and_every_model_runs_at_real_shapes(task, tmp_path):
    """Both baselines × every setting of the task (the 66 over all tasks), every other variant × its largest setting:
    finite, one step each. One test per task, so that a failure names its task."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    # one member and one step: the shapes are what this test checks (a whole group: the test below)
    config["scales"]["smoke"]["optim"].update(batch_size=2, eval_batch_size=2, precision="bf16", max_steps_per_epoch=1,
                                              lrs=[1e-3], weight_decays=[0.0])  # fmt: skip
    df = pd.DataFrame(smoke(config, "smoke", torch.device("cpu"), variant_names(), [task], tmp_path))
    print(summary_markdown(df, "smoke", "cpu"))
    settings = task_settings(task, "mad", {})
    for baseline in BASELINES:
        assert len(df[df["variant"] == baseline]) == len(settings)
    others = df[~df["variant"].isin(BASELINES)]
    assert len(others) == len(variant_names()) - 2
    biggest = max((s.fields["seq_len"], s.fields["vocab_size"]) for s in settings)
    assert set(zip(others["seq_len"], others["vocab_size"])) == {biggest}
    if task in LARGEST:
        field, value = LARGEST[task]
        assert others[field].max() == value
    failed = df[~df["ok"]]
    assert failed.empty, failed[["variant", "task", "setting_id", "error"]].to_string()
    assert (df["peak_memory_mb"] > 0).all()


def test_the_smoke_check_trains_each_settings_whole_fused_group_past_capture():
    """As the full scale's jobs: every lr × weight decay of the scale as one group, 5 steps (capture's 3 warm-up
    calls, the recording, a replay); the row reports the members, whether steps were replayed and the reserved
    memory (NaN on a CPU, where nothing is captured)."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    optim = config["scales"]["smoke"]["optim"]
    assert optim["max_steps_per_epoch"] >= WARMUP_CALLS + 2 and optim["max_eval_batches"] >= WARMUP_CALLS + 2
    assert (optim["lrs"], optim["weight_decays"]) == (config["scales"]["full"]["optim"]["lrs"],
                                                      config["scales"]["full"]["optim"]["weight_decays"])
    tiny = {"seq_len": 16, "num_train_examples": 64, "num_test_examples": 32}
    model = {"dim": 16, "num_heads": 2, "head_dim": 8, "chunk_size": 16}
    config["scales"]["smoke"].update(grid="baseline", model=model, task_overrides={"context_recall": tiny})
    optim.update(batch_size=8, eval_batch_size=8)
    [row] = smoke(config, "smoke", torch.device("cpu"), ["delta_net_4layer"], ["context_recall"], log=lambda _: None)
    members = len(optim["lrs"]) * len(optim["weight_decays"])
    assert row["ok"] and row["members"] == members == 6 and row["replayed"] is False
    assert math.isnan(row["reserved_memory_mb"]) and row["peak_memory_mb"] > 0


def test_smoke_command_writes_its_table_and_fails_on_a_failed_run(tmp_path, monkeypatch, capsys):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["scales"]["smoke"]["task_overrides"] = {"memorization": {"vocab_size": 32}}
    config["scales"]["smoke"]["grid"] = "baseline"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    args = ["--out-dir", str(tmp_path / "out"), "--config", str(path), "--device", "cpu", "--batch-size", "2",
            "--tasks", "memorization", "--variants", "delta_net_4layer,delta_net_4layer_rope_qk_in_for_loop"]
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        assert main(args) == 0
        assert torch.get_float32_matmul_precision() == "high"  # as in `deltanet train`: the same numerics
    finally:
        torch.set_float32_matmul_precision(before)
    table = (tmp_path / "out" / "smoke.md").read_text()
    assert "2/2 runs finite" in table and "memorization" in table

    def broken_train_group(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("deltanet.training.loop.train_group", broken_train_group)
    assert main(args) == 1
    table = (tmp_path / "out" / "smoke.md").read_text()
    assert "0/2 runs finite" in table and "OutOfMemoryError: CUDA out of memory" in table
    assert main([*args[:-1], "no_such_variant"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "deltanet smoke: error: --variants: unknown variant 'no_such_variant' (deltanet variants lists all "
        f"{len(variant_names())})")
