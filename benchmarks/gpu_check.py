"""One prepared GPU check: every GPU-only test and figure in one command, summarised as markdown + JSON.

    python benchmarks/gpu_check.py --out DIR [--wheels DIR] [--budget-s 480]

On one CUDA GPU (about 6–8 minutes) it runs, each part with its own time limit:

1. ``pytest -m cuda`` (the tests that skip on CPU);
2. ``deltanet verify-kernels --device cuda`` (full grid, fp32/fp16/bf16);
3. ``benchmarks/kernels.py`` at T ∈ {512, 2048, 8192}, D ∈ {64, 128}, fwd and fwd+bwd, against the naive loop and
   fla's ``chunk_delta_rule`` / ``chunk_gated_delta_rule`` (fla-core installed from ``--wheels``, a folder holding
   ``fla_core-0.6.0`` and ``einops`` wheels: ``pip download fla-core==0.6.0 einops --no-deps -d wheels``);
4. ``benchmarks/train_throughput.py`` at full-scale shapes for every model (bf16 autocast), ratio to the baseline;
5. ``benchmarks/protocol_cost.py``: seconds per epoch of one full-scale run per task, extrapolated to the whole
   protocol in GPU-hours (using 4's ratios);
6. ``benchmarks/packing.py``: aggregate throughput of 1, 4 and 8 concurrent training processes on the GPU.

Without a GPU the same command runs every part at tiny shapes (Triton interpreter, the tiny scale) in well under
a minute, so CI exercises it; the parts that need a GPU or the fla wheel say they were skipped and why. Writes
``DIR/summary.md``, ``DIR/summary.json`` and each part's log and outputs; exit 1 if any part that ran failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLA_VERSION = "0.6.0"


def gpu_name() -> str | None:
    """The first NVIDIA GPU's name (``nvidia-smi``), or None without one (no torch import in this process)."""
    if not shutil.which("nvidia-smi"):
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def parts(out: Path, gpu: bool, fla_path: Path | None) -> list[tuple[str, list[str], int, dict]]:
    """(name, command, time limit in s, extra env) of each part, at GPU or at tiny CPU shapes."""
    py = sys.executable
    bench = REPO / "benchmarks"
    if gpu:
        return [
            ("pytest -m cuda", [py, "-m", "pytest", "-m", "cuda", "-q", "-ra", str(REPO / "tests")], 150, {}),
            ("verify-kernels", [py, "-m", "deltanet", "verify-kernels", "--device", "cuda",
                                "--out", str(out / "verify.parquet"), "--summary", str(out / "verify.md")], 150, {}),
            ("kernels vs naive and fla", [py, str(bench / "kernels.py"), "--T", "512", "2048", "8192", "--D", "64",
                                          "128", "--csv", str(out / "kernels.csv")], 120,
             {"PYTHONPATH": str(fla_path)} if fla_path else {}),
            ("train throughput (24 models)", [py, str(bench / "train_throughput.py"), "--scale", "full",
                                              "--json", str(out / "throughput.json")], 90, {}),
            ("full-scale epoch per task", [py, str(bench / "protocol_cost.py"), "--scale", "full", "--epochs", "2",
                                           "--throughput", str(out / "throughput.json"),
                                           "--json", str(out / "protocol_cost.json")], 120, {}),
            ("packing 1/4/8 processes", [py, str(bench / "packing.py"), "--procs", "1", "4", "8", "--seconds", "10",
                                         "--warmup", "20", "--json", str(out / "packing.json")], 120, {}),
        ]  # fmt: skip
    interp = {"TRITON_INTERPRET": "1"}
    return [
        ("pytest -m cuda", [], 0, {}),
        ("verify-kernels", [py, "-m", "deltanet", "verify-kernels", "--device", "cpu", "--quick",
                            "--out", str(out / "verify.parquet"), "--summary", str(out / "verify.md")], 120, interp),
        ("kernels vs naive and fla", [py, str(bench / "kernels.py")], 60, interp),
        ("train throughput (24 models)", [py, str(bench / "train_throughput.py"), "--scale", "tiny", "--seq-len", "32",
                                          "--steps", "1", "--warmup", "1",
                                          "--json", str(out / "throughput.json")], 120, {}),
        ("full-scale epoch per task", [py, str(bench / "protocol_cost.py"), "--scale", "tiny", "--epochs", "2",
                                       "--steps-per-epoch", "2", "--tasks", "context_recall,memorization",
                                       "--throughput", str(out / "throughput.json"),
                                       "--json", str(out / "protocol_cost.json")], 120, {}),
        ("packing 1/4/8 processes", [py, str(bench / "packing.py"), "--scale", "tiny", "--procs", "1", "2",
                                     "--seconds", "2", "--warmup", "15", "--json", str(out / "packing.json")], 60, {}),
    ]  # fmt: skip


def install_fla(wheels: Path | None, out: Path, gpu: bool) -> tuple[Path | None, str]:
    """Install fla-core from the wheel folder into ``out/fla`` (no index: GPU machines may have none)."""
    if not gpu:
        return None, "skipped: fla's kernels need a CUDA GPU"
    if wheels is None or not any(wheels.glob(f"fla_core-{FLA_VERSION}-*.whl")):
        return None, f"skipped: no fla_core-{FLA_VERSION} wheel (pass --wheels DIR; see the docstring)"
    target = out / "fla"
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet", "--target", str(target),
           "--find-links", str(wheels), f"fla-core=={FLA_VERSION}", "einops"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        return None, f"skipped: pip could not install fla-core from {wheels}: {done.stderr.strip()[-300:]}"
    return target, f"fla-core {FLA_VERSION} installed from {wheels}"


def run_part(name: str, cmd: list[str], limit: int, env: dict, log: Path, deadline: float) -> dict:
    limit = int(min(limit, deadline - time.time()))
    if limit < 10:
        return {"part": name, "status": "skipped", "detail": "skipped: the check's time budget is spent"}
    started = time.perf_counter()
    with log.open("w") as f:
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=limit, cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO), **env}).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            rc = "timeout"
    seconds = time.perf_counter() - started
    text = log.read_text(errors="replace")
    if rc == 0:
        status = "ok"
    else:
        status = f"failed ({f'timed out after {limit} s' if rc == 'timeout' else f'exit {rc}'})"
    return {"part": name, "status": status, "seconds": round(seconds, 1), "log": log.name,
            "output": text[-4000:]}  # fmt: skip


def summary_markdown(meta: dict, results: list[dict]) -> str:
    lines = [f"# GPU check — {meta['date']}", "",
             f"- device: {meta['device']}", f"- python {meta['python']}; {meta['fla']}", "",
             "| part | status | seconds |", "|---|---|---:|"]  # fmt: skip
    lines += [f"| {r['part']} | {r['status'] if r['status'] != 'skipped' else r['detail']} | {r.get('seconds', '')} |"
              for r in results]  # fmt: skip
    for r in results:
        if r.get("output"):
            tables = [line for line in r["output"].splitlines() if line.startswith("|") or "GPU-hours" in line]
            body = tables or r["output"].strip().splitlines()[-15:]
            lines += ["", f"## {r['part']}", "", *body]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="directory for summary.md, summary.json and logs")
    p.add_argument("--wheels", type=Path, help="folder with the fla-core and einops wheels")
    p.add_argument("--budget-s", type=float, default=480, help="stop starting parts after this many seconds")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + args.budget_s
    gpu = gpu_name()
    fla_path, fla_note = install_fla(args.wheels, args.out, gpu is not None)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": gpu or "no GPU: tiny CPU shapes",
            "python": platform.python_version(), "fla": fla_note}  # fmt: skip
    results = []
    for name, cmd, limit, env in parts(args.out, gpu is not None, fla_path):
        if not cmd:
            results.append({"part": name, "status": "skipped", "detail": "skipped: needs a CUDA GPU"})
        else:
            log = args.out / (name.split()[0].replace("-", "_") + ".log")
            results.append(run_part(name, cmd, limit, env, log, deadline))
        print(f"gpu_check: {name}: {results[-1]['status']}", flush=True)
    (args.out / "summary.json").write_text(json.dumps({**meta, "parts": results}, indent=1))
    (args.out / "summary.md").write_text(summary_markdown(meta, results))
    print(f"gpu_check: summary in {args.out / 'summary.md'}")
    return 1 if any(r["status"].startswith("failed") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
