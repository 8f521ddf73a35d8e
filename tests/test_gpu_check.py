"""``benchmarks/gpu_check.py``, the one prepared GPU check, run here at tiny CPU shapes so CI exercises it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402

PARTS = ["pytest -m cuda", "verify-kernels", "kernels vs naive and fla", "train throughput (24 models)",
         "full-scale epoch per task", "packing 1/4/8 processes"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(gpu_check.gpu_name() is not None, reason="on a GPU machine this is the real 8-minute check")
def test_gpu_check_runs_every_part_at_tiny_shapes_without_a_gpu(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    status = {p["part"]: p["status"] for p in summary["parts"]}
    assert list(status) == PARTS
    assert status.pop("pytest -m cuda") == "skipped" and set(status.values()) == {"ok"}
    assert summary["fla"] == "skipped: fla's kernels need a CUDA GPU"
    text = (tmp_path / "summary.md").read_text()
    assert "| pytest -m cuda | skipped: needs a CUDA GPU |" in text
    assert "| delta_net_4layer | " in text and "GPU-hours" in text and "| processes |" in text
    assert (tmp_path / "verify.parquet").exists() and (tmp_path / "throughput.json").exists()


def test_gpu_check_says_why_fla_is_skipped(tmp_path):
    assert gpu_check.install_fla(None, tmp_path, gpu=True)[1].startswith("skipped: no fla_core-0.6.0 wheel")
    assert gpu_check.install_fla(tmp_path, tmp_path, gpu=True)[1].startswith("skipped: no fla_core-0.6.0 wheel")
    (tmp_path / "fla_core-0.6.0-py3-none-any.whl").write_bytes(b"not a wheel")
    path, note = gpu_check.install_fla(tmp_path, tmp_path / "out", gpu=True)
    assert path is None and note.startswith("skipped: pip could not install fla-core")


def test_a_failing_part_is_reported_and_a_part_past_the_deadline_is_skipped(tmp_path):
    results = [gpu_check.run_part("boom", [sys.executable, "-c", "raise SystemExit(3)"], 30, {}, tmp_path / "b.log",
                                  deadline=float("inf")),
               gpu_check.run_part("late", [sys.executable, "-c", "1"], 30, {}, tmp_path / "l.log", deadline=0)]
    assert results[0]["status"] == "failed (exit 3)" and results[1]["detail"].startswith("skipped: the check's time")
    assert "| boom | failed (exit 3) |" in gpu_check.summary_markdown(
        {"date": "d", "device": "x", "python": "3", "fla": "f"}, results)
