"""Aggregation: MAD's score rule on synthetic run tables with a known answer, the CSV's shape, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deltanet import aggregate
from deltanet.aggregate import (
    REFERENCE_CSV,
    SCORE_COLUMNS,
    load_reference,
    mean_ci,
    score_runs,
    to_csv_text,
    wide_table,
)
from deltanet.runs import RUN_COLUMNS, SCHEMA_VERSION, RunFileError
from deltanet.tasks import TASK_IDS

VOCAB = {"compression": 16, "context_recall": 16, "fuzzy_recall": 16, "memorization": 64,
         "noisy_recall": 32, "selective_copy": 16}  # fmt: skip


def make_run(variant: str, task: str, setting: int, lr: float, wd: float, seed: int, acc: float, **extra) -> dict:
    """One run row with every ``RUN_COLUMNS`` field (plus the task's setting field ``vocab_size``)."""
    vocab = VOCAB.get(task, 16) * (setting + 1)
    row = {
        "schema_version": SCHEMA_VERSION, "variant": variant, "mixer": "delta_net", "task": task, "scale": "tiny",
        "setting_id": f"s{setting}", "setting_json": json.dumps({"vocab_size": vocab}),
        "lr": lr, "weight_decay": wd, "seed": seed,
        "test_acc": acc, "test_acc_micro": acc, "test_ppl": 2.0, "test_loss": 0.7,
        "train_acc": acc, "train_acc_micro": acc, "train_ppl": 2.0, "train_loss": 0.7,
        "best_epoch": 1, "epochs_run": 2, "stop_reason": "max_epochs",
        "wall_seconds": 1.5, "tokens_per_second": 1000.0, "peak_memory_mb": 10.0,
        "finished_at": "2026-11-23T12:00:00+00:00",
        "device": "cpu", "torch_version": "2.13.0", "triton_version": "", "python_version": "3.12.0",
        "lock_file": "requirements/cpu.txt", "lock_sha256": "2" * 64, "image_sha256": "none",
        "git_commit": "abc1234", "git_dirty": False, "variant_source_sha256": "0" * 64, "shared_code_sha256": "3" * 64,
        "config_sha256": "1" * 64,
        "profile": "iso_state", "num_parameters": 1000, "group_size": 1, "captured": False, "vocab_size": vocab,
    }  # fmt: skip
    row.update(extra)
    return row


def runs_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    assert set(RUN_COLUMNS) <= set(df.columns)
    return df


def full_grid(variant: str, base: float, seeds=(0,), tasks=TASK_IDS) -> list[dict]:
    """Two settings × two lrs per task; the best of each setting is ``base + 0.1·setting``."""
    rows = []
    for ti, task in enumerate(tasks):
        for seed in seeds:
            for s in range(2):
                best = base + 0.01 * ti + 0.1 * s
                rows.append(make_run(variant, task, s, 1e-3, 0.0, seed, best))
                rows.append(make_run(variant, task, s, 1e-4, 0.0, seed, best - 0.05))
    return rows


def write_runs_dir(root: Path, rows: list[dict]) -> Path:
    runs_dir = root / "runs"
    df = runs_frame(rows)
    for (variant, task), part in df.groupby(["variant", "task"]):
        path = runs_dir / variant / f"{task}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        part.reset_index(drop=True).to_parquet(path, index=False)
    return runs_dir


def test_best_over_sweep_then_mean_over_settings():
    rows = [
        # setting 0: best over the sweep is 0.8 (lr 1e-3, wd 0.1)
        make_run("v", "compression", 0, 1e-4, 0.0, 1, 0.5),
        make_run("v", "compression", 0, 1e-3, 0.1, 1, 0.8),
        make_run("v", "compression", 0, 1e-3, 0.0, 1, 0.7, stop_reason="diverged"),
        # setting 1: best is 0.4; the NaN run is dropped like MAD's dropna and counted
        make_run("v", "compression", 1, 1e-4, 0.0, 1, 0.4),
        make_run("v", "compression", 1, 1e-3, 0.0, 1, math.nan),
    ]
    long = score_runs(runs_frame(rows), tasks=["compression"])
    cell = long.iloc[0]
    assert cell["score"] == pytest.approx((0.8 + 0.4) / 2)
    assert (cell["n_settings"], cell["n_seeds"], cell["n_runs"], cell["n_diverged"], cell["n_nan"]) == (2, 1, 5, 1, 1)
    assert math.isnan(cell["ci_low"]) and math.isnan(cell["ci_high"])  # one seed: no interval


def test_diverged_run_counts_with_its_accuracy():
    rows = [
        make_run("v", "memorization", 0, 1e-4, 0.0, 1, 0.3),
        make_run("v", "memorization", 0, 1e-3, 0.0, 1, 0.6, stop_reason="diverged"),
    ]
    cell = score_runs(runs_frame(rows), tasks=["memorization"]).iloc[0]
    assert cell["score"] == pytest.approx(0.6) and cell["n_diverged"] == 1


def test_mean_and_ci_over_seeds():
    per_seed = {1: (0.6, 0.8), 2: (0.5, 0.7), 3: (0.7, 0.9)}  # best per setting, per seed
    rows = []
    for seed, (a, b) in per_seed.items():
        rows += [make_run("v", "selective_copy", 0, 1e-3, 0.0, seed, a), make_run("v", "selective_copy", 0, 1e-4, 0.0, seed, a - 0.2)]
        rows += [make_run("v", "selective_copy", 1, 1e-3, 0.0, seed, b)]
    cell = score_runs(runs_frame(rows), tasks=["selective_copy"]).iloc[0]
    seed_scores = np.array([0.7, 0.6, 0.8])
    half = 4.303 * seed_scores.std(ddof=1) / math.sqrt(3)  # t(0.975, 2) = 4.303
    assert cell["score"] == pytest.approx(0.7)
    assert cell["ci_low"] == pytest.approx(0.7 - half) and cell["ci_high"] == pytest.approx(0.7 + half)
    assert cell["n_seeds"] == 3 and cell["n_settings"] == 2


def test_mean_ci_large_sample_uses_normal():
    mean, lo, hi = mean_ci(np.arange(40, dtype=float))
    assert hi - mean == pytest.approx(1.96 * np.arange(40).std(ddof=1) / math.sqrt(40))


def test_missing_cells_are_missing_not_zero():
    rows = full_grid("a", 0.5) + full_grid("b", 0.3, tasks=TASK_IDS[:4])
    long = score_runs(runs_frame(rows))
    assert len(long) == 12
    missing = long[long["score"].isna()]
    assert sorted(missing["task"]) == sorted(TASK_IDS[4:]) and set(missing["variant"]) == {"b"}
    assert (missing["n_runs"] == 0).all()
    wide = wide_table(long).set_index("variant")
    assert wide.loc["a", "Average"] == pytest.approx(np.mean([0.5 + 0.01 * i + 0.05 for i in range(6)]))
    assert math.isnan(wide.loc["b", "Average"]) and math.isnan(wide.loc["b", "Noisy Recall"])
    text = to_csv_text(wide.reset_index())
    line_b = [ln for ln in text.splitlines() if ln.startswith("b,")][0]
    assert line_b.endswith(",,,") and "0.000000" not in line_b  # Noisy Recall, Selective Copy, Average empty


def test_csv_header_and_order_equal_reference():
    long = score_runs(runs_frame(full_grid("a", 0.5)))
    header = to_csv_text(wide_table(long)).splitlines()[0]
    ref_header = REFERENCE_CSV.read_text().splitlines()[0]
    assert header == ref_header + ",Average"
    assert ref_header.split(",")[1:] == SCORE_COLUMNS


def test_reference_csv_loads_and_round_trips():
    ref = load_reference()
    assert len(ref) == 22 and ref["variant"].is_unique
    assert {"delta_net_4layer", "gated_delta_net_4layer"} <= set(ref["variant"])
    assert ref.loc[ref["variant"] == "gated_delta_net_4layer", "Selective Copy"].item() == pytest.approx(0.996908)
    text = to_csv_text(ref.drop(columns="Average"))
    assert text == REFERENCE_CSV.read_text()


def test_corrupt_parquet_names_the_file(tmp_path):
    runs_dir = write_runs_dir(tmp_path, full_grid("a", 0.5))
    bad = runs_dir / "a" / "memorization.parquet"
    bad.write_bytes(b"PAR1 this is not a parquet file")
    with pytest.raises(RunFileError, match="memorization.parquet"):
        aggregate.aggregate_dir(runs_dir)
    assert aggregate.main(["--runs-dir", str(runs_dir), "--out-dir", str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out" / "accuracies.csv").exists()


def test_missing_expected_file_names_the_file(tmp_path):
    runs_dir = write_runs_dir(tmp_path, full_grid("a", 0.5, tasks=TASK_IDS[:5]))
    with pytest.raises(RunFileError, match=r"a/selective_copy\.parquet: run file does not exist"):
        aggregate.aggregate_dir(runs_dir, variants=["a"], tasks=list(TASK_IDS))


def test_misplaced_rows_are_rejected(tmp_path):
    runs_dir = write_runs_dir(tmp_path, full_grid("a", 0.5, tasks=TASK_IDS[:1]))
    (runs_dir / "a" / "compression.parquet").rename(runs_dir / "a" / "memorization.parquet")
    with pytest.raises(RunFileError, match="expected 'a' / 'memorization'"):
        aggregate.aggregate_dir(runs_dir)


def test_cli_happy_path(tmp_path, capsys):
    runs_dir = write_runs_dir(tmp_path, full_grid("a", 0.5) + full_grid("b", 0.3, tasks=TASK_IDS[:5]))
    out = tmp_path / "tiny"
    rc = aggregate.main(["--runs-dir", str(runs_dir), "--scale", "tiny", "--out-dir", str(out)])
    assert rc == 0 and "b/selective_copy" in capsys.readouterr().out
    csv = pd.read_csv(out / "accuracies.csv")
    assert list(csv.columns) == ["variant", *SCORE_COLUMNS, "Average"] and list(csv["variant"]) == ["a", "b"]
    assert csv["Selective Copy"].isna().tolist() == [False, True]
    long = pd.read_parquet(out / "accuracies.parquet")
    assert list(long.columns) == aggregate.LONG_COLUMNS and len(long) == 12
    md = (out / "accuracies.md").read_text()
    assert md.startswith("| variant") and "—" in md
    # explicit files: the variant missing a task shows as missing as well
    files = [str(p) for p in sorted(runs_dir.glob("*/*.parquet"))]
    assert aggregate.main(["--runs", *files, "--out-dir", str(tmp_path / "f")]) == 0
    assert (tmp_path / "f" / "accuracies.csv").read_text() == (out / "accuracies.csv").read_text()
    # a wrong scale is refused
    assert aggregate.main(["--runs-dir", str(runs_dir), "--scale", "full", "--out-dir", str(tmp_path / "g")]) == 1


def test_empty_runs_dir_is_an_error(tmp_path):
    (tmp_path / "runs").mkdir()
    with pytest.raises(RunFileError, match="no run files"):
        aggregate.aggregate_dir(tmp_path / "runs")
    empty = score_runs(aggregate.read_run_files([]))
    assert empty.empty and list(wide_table(empty).columns) == aggregate.WIDE_COLUMNS


def diverged_rows(variant: str = "v", task: str = "memorization", n: int = 2) -> list[dict]:
    """``n`` runs of one cell that diverged in their first epoch: stop_reason diverged, every metric NaN."""
    nan = math.nan
    return [make_run(variant, task, 0, lr, 0.0, 1, nan, stop_reason="diverged", test_acc_micro=nan, test_ppl=nan,
                     test_loss=nan, train_acc=nan, train_acc_micro=nan, train_ppl=nan, train_loss=nan)
            for lr in (1e-3, 1e-4)[:n]]  # fmt: skip


def test_diverged_cell_is_shown_as_diverged_not_missing(tmp_path, capsys):
    rows = full_grid("a", 0.5) + full_grid("b", 0.3, tasks=[t for t in TASK_IDS if t != "memorization"])
    runs_dir = write_runs_dir(tmp_path, rows + diverged_rows("b"))
    out = tmp_path / "tiny"
    assert aggregate.main(["--runs-dir", str(runs_dir), "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "missing cells" not in printed
    assert "diverged cells (1): b/memorization (2/2 runs diverged)" in printed
    row_b = [ln for ln in (out / "accuracies.md").read_text().splitlines() if ln.startswith("| b ")][0]
    cells = [c.strip() for c in row_b.strip("|").split("|")]
    assert cells[1 + SCORE_COLUMNS.index("Memorize")] == "diverged (2/2 runs)"
    assert cells[-1] == "—"  # no average: a task has no finite score
    notes = aggregate.cell_notes(pd.read_parquet(out / "accuracies.parquet"))
    assert notes == {("b", "Memorize"): "diverged (2/2 runs)"}
