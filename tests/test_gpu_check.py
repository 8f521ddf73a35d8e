"""``benchmarks/gpu_check.py``, the one-call GPU check: rows kept past a timeout, order and budget, wheels; and the
whole check at tiny CPU shapes (slow), so CI exercises every part."""

import json
import math
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402

PARTS = ["cuda tests", "kernel compile", "kernels", "variant ratios", "protocol cost", "engine check", "fused vs solo",
         "short conv", "workflow", "verify compile", "verify-kernels"]

# emits an announcement of 3 rows and 2 of them, waits until summary.json holds both (the summary is rewritten as
# rows come, not at the end), starts a grandchild, then hangs past its limit
HANGING_PART = """
import json, subprocess, sys, time
from pathlib import Path
from rows import emit, expect
out = Path(sys.argv[1])
expect("n", [1, 2, 3])
emit(n=1, warmup_s=0.5, measure_s=0.25)
emit(n=2, warmup_s=0.5, measure_s=0.25)
while True:  # until the summary holds both rows (the limit ends the wait otherwise)
    parts = json.loads((out / "summary.json").read_text())["parts"] if (out / "summary.json").exists() else []
    if any(len(p.get("rows", [])) == 2 for p in parts):
        (out / "seen").write_text("")
        break
    time.sleep(0.05)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
(out / "child").write_text(str(child.pid))
print("partial output", flush=True)
time.sleep(60)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def fake_plan(monkeypatch, parts: list, gpu: str | None = "fake GPU") -> None:
    """The check runs ``parts``, on a machine that has a GPU named ``gpu`` (its limits hold) or none (None)."""
    monkeypatch.setattr(gpu_check, "plan", lambda out, has_gpu: parts)
    monkeypatch.setattr(gpu_check, "gpu_name", lambda: gpu)


def test_a_part_killed_at_its_limit_keeps_the_rows_it_printed(tmp_path, monkeypatch):
    hang = gpu_check.Part("hangs", [[sys.executable, "-c", HANGING_PART, str(tmp_path)]], limit_s=4)
    after = gpu_check.Part("after", [[sys.executable, "-c", "from rows import emit; emit(k='x')"]], limit_s=30)
    fake_plan(monkeypatch, [hang, after])
    assert gpu_check.main(["--out", str(tmp_path)]) == 1
    assert (tmp_path / "seen").exists(), "summary.json did not hold the rows while the part was still running"
    assert not alive(int((tmp_path / "child").read_text())), "the part's child outlived the limit"
    summary = json.loads((tmp_path / "summary.json").read_text())
    hangs, done = summary["parts"]
    assert hangs["status"] == "timed out after 4 s" and [r["n"] for r in hangs["rows"]] == [1, 2]
    assert hangs["not_reached"] == ["3"] and (hangs["warmup_s"], hangs["measure_s"]) == (1.0, 0.5)
    assert done["status"] == "ok" and done["rows"] == [{"k": "x"}] and done["not_reached"] == []
    text = (tmp_path / "summary.md").read_text()
    assert "| hangs | timed out after 4 s | 4 |" in text and "| 1 | 0.5 | 0 | 2 | 1: 3 |" in text
    assert "| n | warmup_s | measure_s |" in text and "| 2 | 0.5 | 0.25 |" in text and "partial output" in text
    assert "ROW " in (tmp_path / "hangs.log").read_text()


def test_a_part_runs_under_what_is_left_of_the_budget_and_is_skipped_without_it(tmp_path, monkeypatch):
    quick = gpu_check.Part("quick", [[sys.executable, "-c", "import time; time.sleep(3)"]], limit_s=100)
    parts = [quick, gpu_check.Part("late", [[sys.executable, "-c", "1"]], limit_s=100)]
    fake_plan(monkeypatch, parts)
    assert gpu_check.main(["--out", str(tmp_path), "--budget-s", "12"]) == 1
    first, late = json.loads((tmp_path / "summary.json").read_text())["parts"]
    assert first["status"] == "ok" and first["limit_s"] in (11, 12)  # capped by the budget, not its own 100 s
    assert late["status"] == "skipped: the check's time budget is spent" and late["not_reached"] == ["the whole part"]
    failing = gpu_check.Part("boom", [[sys.executable, "-c", "raise SystemExit(3)"], [sys.executable, "-c", "1"]],
                             limit_s=30)  # fmt: skip
    assert gpu_check.run_part(failing, tmp_path, deadline=float("inf"))["status"] == "failed (exit 3)"


def test_a_missing_or_nan_throughput_ratio_leaves_the_protocol_cost_unknown():
    import protocol_cost

    from deltanet.config import load_config
    from deltanet.variants import variant_names

    config, per_task = load_config(REPO / "config.yaml"), {"memorization": 10.0}
    assumed = protocol_cost.protocol_gpu_hours(config, "full", per_task, None)
    assert assumed["ratios"] == "assumed 1" and assumed["gpu_hours_upper_bound"] > 0
    ratios = {m: 1.0 for m in variant_names()}
    measured = protocol_cost.protocol_gpu_hours(config, "full", per_task, ratios)
    assert measured["gpu_hours_upper_bound"] == pytest.approx(assumed["gpu_hours_upper_bound"])
    ratios["gated_delta_net_4layer"] = float("nan")
    del ratios["delta_net_4layer_rope_qk_in_for_loop"]
    unknown = protocol_cost.protocol_gpu_hours(config, "full", per_task, ratios)
    assert unknown["missing_ratios"] == ["delta_net_4layer_rope_qk_in_for_loop", "gated_delta_net_4layer"]
    assert unknown["gpu_hours_upper_bound"] != unknown["gpu_hours_upper_bound"]  # NaN, never a ratio of 1


def test_without_a_gpu_the_gpu_limits_never_stop_a_part(tmp_path, monkeypatch):
    """A slow machine runs every part to its end: the limits (and the budget) are the GPU's, shown, not enforced."""
    slow = gpu_check.Part("slow", [[sys.executable, "-c", "import time; from rows import emit; time.sleep(3); "
                                                          "emit(k='late')"]], limit_s=1)  # fmt: skip
    fake_plan(monkeypatch, [slow, gpu_check.Part("next", [[sys.executable, "-c", "1"]], limit_s=1)], gpu=None)
    assert gpu_check.main(["--out", str(tmp_path), "--budget-s", "1"]) == 0
    slow_result, after = json.loads((tmp_path / "summary.json").read_text())["parts"]
    assert slow_result["status"] == after["status"] == "ok" and slow_result["rows"] == [{"k": "late"}]
    assert slow_result["limit_s"] == 1 and "not enforced without a GPU" in slow_result["notes"][0]


def test_a_ratio_of_steps_not_replayed_leaves_the_protocol_cost_unknown():
    import protocol_cost

    row = {"job_engine": "captured", "ratio": 0.5, "replayed": True}
    figures = {"delta_net_4layer": {**row, "ratio": 1.0}, "a": row, "b": {**row, "replayed": False}}
    assert protocol_cost.replayed_ratios(figures) == {"delta_net_4layer": 1.0, "a": 0.5, "b": pytest.approx(math.nan,
                                                                                                         nan_ok=True)}
    figures["delta_net_4layer"]["replayed"] = False  # a baseline run eagerly: no ratio is of the jobs' engine
    assert all(math.isnan(r) for r in protocol_cost.replayed_ratios(figures).values())
    cpu = {m: {**v, "job_engine": "fused", "replayed": False} for m, v in figures.items()}
    assert protocol_cost.replayed_ratios(cpu)["b"] == 0.5


def test_the_protocol_cost_times_a_steady_epoch_and_counts_finish_apart(monkeypatch):
    """finish() at the stopping epoch (made to take 10⁶ s on a fake clock) is not in the epoch's figure."""
    import protocol_cost

    from deltanet.config import load_config
    from deltanet.training import loop

    clock = {"offset": 0.0}
    real_clock, real_finish = time.perf_counter, loop.finish

    def slow_finish(group, stopped, *args):
        real_finish(group, stopped, *args)
        clock["offset"] += 1e6 * bool(stopped)

    monkeypatch.setattr(time, "perf_counter", lambda: real_clock() + clock["offset"])
    monkeypatch.setattr(loop, "finish", slow_finish)
    epoch, finish = protocol_cost.epoch_seconds(load_config(REPO / "config.yaml"), "tiny", "memorization", 2,
                                                torch.device("cpu"), steps=1)  # fmt: skip
    assert epoch < 1e5 and finish >= 1e6


@pytest.mark.parametrize("gpu", [True, False], ids=["gpu", "cpu"])
def test_figures_come_first_correctness_once_and_the_limits_fit_the_budget(tmp_path, gpu):
    parts = gpu_check.plan(tmp_path, gpu)
    assert [p.name for p in parts] == PARTS
    commands = [" ".join(cmd[1:]) for p in parts for cmd in p.commands]
    assert sum("--verify-shard" in c for c in commands) == len(parts[-1].commands) > 1  # the one verification
    assert not any(c.startswith("-m deltanet") for c in commands)  # never the same grid twice:
    files = " ".join(str(REPO / f) for f in ("tests/test_resume.py", "tests/test_capture.py", "tests/test_fused.py"))
    assert [c for c in commands if c.startswith("-m pytest")] == [  # resume first; no full grid
        f"-m pytest -o addopts= -m cuda -v --tb=long -ra {files}"]
    assert gpu_check.default_budget(parts) == gpu_check.SETUP_S + sum(p.limit_s for p in parts)
    # the figures that matter come first: within 5 minutes of the start, whatever the parts before them take
    last = max(PARTS.index(name) for name in gpu_check.FIRST_FIGURES)
    assert gpu_check.SETUP_S + sum(p.limit_s for p in parts[: last + 1]) <= gpu_check.FIGURES_S == 5 * 60
    # each compile part warms the parts after it, up to the next one: the workflow and verify-kernels come after
    served = {p.name: {c[c.index("--parts") + 1] for c in p.commands if "--parts" in c} for p in parts}
    assert served["kernel compile"] == {
        "kernels,variant ratios,protocol cost,engine check,fused vs solo,short conv,workflow"}
    assert served["verify compile"] == {"verify-kernels"}
    if gpu:
        assert gpu_check.default_budget(parts) <= gpu_check.CALL_S == 9 * 60


def test_the_cuda_tests_part_names_every_file_with_cuda_tests():
    marked = {f"tests/{f.name}" for f in (REPO / "tests").glob("test_*.py")
              if "pytest.mark.cuda" in f.read_text() and f.name != Path(__file__).name}  # fmt: skip
    assert marked - {"tests/test_kernels.py"} == set(gpu_check.CUDA_TEST_FILES)  # its one: verify-kernels' grid
    assert "def test_verify_full_grid_cuda" in (REPO / "tests/test_kernels.py").read_text()


def test_a_part_counts_the_kernels_it_compiled(tmp_path, monkeypatch):
    """Two compiles during the part (Triton's cache index files), one already there before it: 2."""
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache" / "old").mkdir(parents=True)
    (tmp_path / "cache" / "old" / "__grp__before.json").write_text("{}")
    code = ("import os, pathlib; c = pathlib.Path(os.environ['TRITON_CACHE_DIR']); "
            "[(c / h).mkdir() or (c / h / f'__grp__{h}.json').write_text('{}') or (c / h / 'k.cubin').write_text('')"
            " for h in ('a', 'b')]")  # fmt: skip
    result = gpu_check.run_part(gpu_check.Part("compiles", [[sys.executable, "-c", code]], 30), tmp_path,
                                float("inf"))  # fmt: skip
    assert result["status"] == "ok" and result["kernels_compiled"] == 2


def make_wheel(folder: Path, module: str) -> Path:
    """A minimal pure-Python wheel holding ``module`` (no network, no build backend)."""
    info = f"{module}-0.1.dist-info"
    files = {f"{module}/__init__.py": "VALUE = 1\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}  # fmt: skip
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    wheel = folder / f"{module}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return wheel


def test_every_wheel_is_installed_and_the_missing_modules_are_named(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "gpucheck_probe_a")
    make_wheel(wheels, "gpucheck_probe_b")
    info = gpu_check.install_wheels(wheels, tmp_path / "site")
    assert {"gpucheck_probe_a", "gpucheck_probe_b"} <= set(info["missing_before"]), info
    assert not {"gpucheck_probe_a", "gpucheck_probe_b"} & set(info["still_missing"]), info
    assert info["site"] == str(tmp_path / "site") and info["note"].startswith("2 wheels installed")
    part = gpu_check.Part("uses", [[sys.executable, "-c", "import gpucheck_probe_b as m; print(m.VALUE)"]], 30)
    result = gpu_check.run_part(part, tmp_path, float("inf"), site=info["site"])
    assert result["status"] == "ok" and result["stdout_tail"] == ["1"]
    needing = gpu_check.Part("needs", [[sys.executable, "-c", "open('ran', 'w')"]], 30, needs=("gpucheck_probe_b",
                                                                                               "gpucheck_probe_c"))
    skipped = gpu_check.run_part(needing, tmp_path, float("inf"), site=info["site"])
    assert skipped["status"] == ("skipped: needs gpucheck_probe_c (missing: bring it with --wheels, "
                                 "benchmarks/gpu_wheels.sh)") and not (tmp_path / "ran").exists()
    assert gpu_check.install_wheels(None, tmp_path / "none")["note"] == "no --wheels folder"
    (wheels / "broken-0.1-py3-none-any.whl").write_bytes(b"not a wheel")
    broken = gpu_check.install_wheels(wheels, tmp_path / "site2")
    assert broken["site"] is None and broken["note"].startswith("pip could not install the wheels")


@pytest.mark.slow
@pytest.mark.skipif(gpu_check.gpu_name() is not None, reason="on a GPU machine this is the real 9-minute check")
def test_gpu_check_runs_every_part_at_tiny_shapes_without_a_gpu(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True)  # no time limit: the GPU's limits do not hold here
    summary = json.loads((tmp_path / "summary.json").read_text())
    status = {p["part"]: p["status"] for p in summary["parts"]}
    assert done.returncode == 0, (status, done.stdout + done.stderr)
    assert list(status) == PARTS and set(status.values()) == {"ok"}
    parts = {p["part"]: p for p in summary["parts"]}
    assert all(parts[name]["rows"] and parts[name]["not_reached"] == [] for name in PARTS[1:])
    assert all(row["ok"] for row in parts["workflow"]["rows"]) and all(
        row["agrees"] and row["op_inputs"] for row in parts["engine check"]["rows"])  # fmt: skip
    assert {r["shape"] for r in parts["kernels"]["rows"]} == {"delta B=1 T=32 H=1 Dk=16 Dv=16 C=16",
                                                              "gated B=1 T=32 H=1 Dk=16 Dv=32 C=16"}  # fmt: skip
    assert all(r["passed"] for r in parts["verify-kernels"]["rows"]) and len(parts["verify-kernels"]["rows"]) == 4
    # the short convolution and F.conv1d agree within 2 bf16 ulps of outputs below 8 (ours rounds its fp32 sum once)
    conv = parts["short conv"]["rows"]
    assert {r["case"] for r in conv} == {"delta_net_4layer q,k,v", "gated_delta_net_4layer q,k,v"}
    assert all(r["max_abs_diff"] <= 2**-4 for r in conv)
    assert "| verify-kernels | ok |" in (tmp_path / "summary.md").read_text()


def test_the_engine_check_compares_what_the_jobs_run_parameters_and_evaluation(monkeypatch):
    """The engine check's evaluation is the group's own (captured, on a GPU) evaluation step against the eager forward
    on the same parameters, and it compares parameters after the steps: a step that computes something else (here an
    evaluation step off by 1 %, parameters nudged by 1 %) is seen."""
    import argparse

    import engine_check
    from train_throughput import job_group

    from deltanet.config import load_config

    cfg = load_config(REPO / "config.yaml") | {"scale": "tiny"}
    args = argparse.Namespace(steps=1, seq_len=16, vocab_size=16)
    group, step = job_group(cfg, "delta_net_4layer", 2, 16, 16, torch.device("cpu"), False)
    step()
    assert engine_check.evaluation(group, args, torch.device("cpu")) == (0.0, False)
    off = group.eval_step.fn
    group.eval_step.fn = lambda x: off(x) * 1.01
    diff, replayed = engine_check.evaluation(group, args, torch.device("cpu"))
    assert diff == pytest.approx(0.01, rel=1e-4) and diff > engine_check.FLOOR and not replayed
    built_alike = [job_group(cfg, "delta_net_4layer", 2, 16, 16, torch.device("cpu"), False)[0] for _ in range(2)]
    assert engine_check.params_diff(*built_alike) == 0.0
    with torch.no_grad():
        next(iter(built_alike[0].fused.params.values())).mul_(1.01)
    assert engine_check.params_diff(*built_alike) == pytest.approx(0.01, rel=1e-4)  # fp32 rounding of the nudge
