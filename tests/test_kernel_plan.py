"""The kernel specialisations a GPU run of the check compiles, derived on the CPU (``benchmarks/kernel_plan.py``):
nothing after a compile part compiles again, whatever lengths the tasks' generators give."""

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deltanet.ops.kernels.launch import enable_interpreter

with contextlib.suppress(RuntimeError):  # as tests/test_kernels.py: one triton mode per process (the plan takes both)
    enable_interpreter()

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402
import kernel_plan  # noqa: E402
from kernel_plan import OpCall, specialisations  # noqa: E402


@pytest.fixture(scope="module")
def calls():
    return kernel_plan.part_calls()


def has_dht(keys: set) -> set:
    """The HAS_DHT values of the bwd_dh_kernel launches among ``keys``."""
    return {value for kernel, spec, _ in keys if kernel == "bwd_dh_kernel" for name, _, value in spec
            if name == "HAS_DHT"}  # fmt: skip


def test_sequence_lengths_do_not_specialise_the_kernels():
    """127 (a task's seq_len − 1), 128 (a benchmark's), 1, 1000: one set of compiled kernels for every length."""
    for op, Dk, Dv in (("delta", 32, 32), ("gated", 256, 512)):
        keys = [specialisations([OpCall(op, 4, T, 2, Dk, Dv, 32)]) for T in (127, 128, 1, 16, 1000)]
        assert all(k == keys[0] for k in keys), op
        assert len(keys[0]) == 6 if op == "delta" else 7  # wy, fwd_h, fwd_o, bwd_dh, vloop, post (+ dqk: 4 tiles)


def test_nothing_compiles_after_the_compile_parts(calls):
    """Each compile part of the GPU check runs small calls (``OpCall.small``) of the parts it serves; every part
    after it launches only what they compiled. The full-scale jobs, on every setting's real row length, launch
    what the kernel compile part compiled, which is also what the kernels part times at the jobs' shapes."""
    parts = gpu_check.plan(Path("/nonexistent"), gpu=True)
    compiled: set = set()
    for part in parts[[p.name for p in parts].index("kernel compile"):]:
        if part.name.endswith("compile"):
            [served] = {c[c.index("--parts") + 1] for c in part.commands if "--parts" in c}
            compiled |= specialisations(kernel_plan.warm_calls(served.split(","), calls))
            if part.name == "kernel compile":
                assert not specialisations(calls["full-scale jobs"]) - compiled
        else:
            launched = specialisations(calls[part.name])
            assert not launched - compiled, f"{part.name} compiles {len(launched - compiled)} kernels"
    assert specialisations(calls["full-scale jobs"]) <= specialisations(calls["kernels"])


def test_the_jobs_lengths_come_from_the_tasks_generators(calls):
    lengths = {c.T for c in calls["full-scale jobs"]}
    assert {127, 255, 1023} <= lengths and {32, 128} <= lengths  # both of Triton's classes: ∤ 16 and divisible


def test_an_unused_final_state_costs_no_gradient(calls):
    """The models use o only: their backward starts the state gradient from zero in the kernel (HAS_DHT False),
    not from a zero-filled tensor autograd would otherwise allocate; verify-kernels' loss uses the state."""
    assert has_dht(specialisations(calls["protocol cost"])) == {False}
    assert has_dht(specialisations(calls["verify-kernels"])) == {True}


def pinned(lock: Path, name: str) -> str:
    """``name``'s requirement in a hash-checked lock: its pin and every ``--hash`` line."""
    block = re.search(rf"^{re.escape(name)}==\S+(?: \\\n\s+--hash=sha256:[0-9a-f]+)+", lock.read_text(), re.M)
    assert block, f"{name} is not pinned with hashes in {lock}"
    return block.group(0)


@pytest.mark.slow
def test_the_images_triton_compiles_the_jobs_kernels_for_sm90(tmp_path):
    """With the Triton of the CUDA image (``requirements/cuda.txt``, installed hash-checked beside this one),
    every kernel specialisation the full-scale jobs launch compiles for sm_90 without a GPU, fits its shared memory
    and spills no register in bf16 (about 25 s of compiling on 2 cores, plus the install)."""
    requirement = pinned(REPO / "requirements" / "cuda.txt", "triton")
    (tmp_path / "triton.txt").write_text(requirement + "\n")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--require-hashes", "--no-deps", "--only-binary=:all:", "--target", str(site),
                    "-r", str(tmp_path / "triton.txt")], check=True)  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "kernel_plan.py"), "--compile-sm90", "--parts",
                           "full-scale jobs"], env=env, capture_output=True, text=True)  # fmt: skip
    version = requirement.split("==")[1].split()[0]
    rows = [line for line in proc.stdout.splitlines() if line.startswith(("ok", "OVER", "SPILL"))]
    assert proc.stdout.startswith(f"triton {version}, sm_90"), proc.stdout[:300] + proc.stderr[-3000:]
    assert proc.returncode == 0 and len(rows) == 13 and all(r.startswith("ok") for r in rows), proc.stdout
