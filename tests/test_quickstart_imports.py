"""A train job loads only what it uses (issue #35): no plotting stack (torchmetrics pulls matplotlib), no sympy.

pandas stays (0.3 s of a tiny job): pyarrow imports it on any conversion of Python values to Arrow (its pandas
shim, ``pyarrow/pandas-shim.pxi``), so writing the parquet file without pandas would not save it."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from deltanet.cli.train import MALLOC_ENV

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("matplotlib", "sympy", "torchmetrics")

# the CLI in this process (the malloc variables set, so it does not re-execute itself), then what it had loaded
JOB = """
import atexit, sys
atexit.register(lambda: print("loaded:", *sorted(m for m in {heavy} if m in sys.modules)))
from deltanet.cli import main
sys.exit(main(["train", "--variant", "gated_delta_net_4layer", "--task", "context_recall", "--config", {config!r},
               "--scale", "tiny", "--device", "cpu", "--threads", "1", "--out", {out!r}]))
"""


def test_a_tiny_train_job_loads_no_plotting_stack_or_sympy(tmp_path):
    """The tiny scale's job, shortened (2 runs fused, 1 epoch of 64 examples), through ``deltanet train``: it trains,
    evaluates, checkpoints and writes its parquet file without importing any of ``HEAVY``."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["seeds"] = [1, 2]
    tiny = config["scales"]["tiny"]
    tiny["optim"]["max_epochs"] = 1
    tiny["task_overrides"]["context_recall"].update(num_train_examples=64, num_test_examples=32)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, **MALLOC_ENV}
    code = JOB.format(heavy=HEAVY, config=str(tmp_path / "config.yaml"), out=str(tmp_path / "runs.parquet"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "wrote 2 runs" in out.stdout
    assert out.stdout.splitlines()[-1] == "loaded:"
