"""The rules' source inputs (deltanet/import_graph.py, read with ast) are the modules each command really loads.

Each command runs as in its rule, in a subprocess that writes its loaded ``deltanet`` modules at exit. Every loaded
module must be derived (else an edit would not rerun the job), and every derived module must be loaded, except
those reached only through imports inside functions that this CPU run did not call (the Triton kernels).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from deltanet import import_graph
from deltanet.variants import variant_names

from tests.test_train import TASK, write_config

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "deltanet"
PROBE = """import atexit, json, runpy, sys
out, sys.argv = sys.argv[1], ["deltanet", *sys.argv[2:]]
atexit.register(lambda: json.dump(sorted(m for m in sys.modules if m.startswith("deltanet")), open(out, "w")))
runpy.run_module("deltanet", run_name="__main__")
"""


def loaded_by(tmp_path, *args):
    out = tmp_path / "loaded.json"
    env = {"DELTANET_NO_REEXEC": "1", "PATH": str(Path(sys.executable).parent)}
    run = subprocess.run([sys.executable, "-c", PROBE, str(out), *args], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert out.is_file(), run.stdout + run.stderr
    return run, set(json.loads(out.read_text())) | {"deltanet.__main__"}  # runpy runs it as __main__


def commands(tmp_path):
    config, runs = str(write_config(tmp_path)), tmp_path / "runs"
    yield "train", ["deltanet.variants.delta_net_4layer_rope_qk_in_for_loop"], [
        "--variant", "delta_net_4layer_rope_qk_in_for_loop", "--task", TASK, "--config", config,
        "--scale", "test", "--out", str(runs / "v" / f"{TASK}.parquet"), "--threads", "1"]
    yield "aggregate", [], ["--runs-dir", str(runs), "--scale", "tiny", "--out-dir", str(tmp_path)]
    yield "report", [], ["--runs-dir", str(runs), "--accuracies", str(tmp_path / "accuracies.parquet"),
                         "--out-dir", str(tmp_path), "--kernels-summary", "none.md", "--identities", "none.json",
                         "--scale", "tiny"]
    yield "variants", [f"deltanet.variants.{n}" for n in variant_names()], [
        "--identities", "--config", config, "--scale", "test"]


@pytest.mark.parametrize("index, command", list(enumerate(["train", "aggregate", "report", "variants"])))
def test_derived_sources_are_the_modules_the_command_loads(tmp_path, index, command):
    (tmp_path / "runs").mkdir()
    name, extra, args = list(commands(tmp_path))[index]
    run, loaded = loaded_by(tmp_path, name, *args)
    roots = import_graph.command_roots(name) + extra
    derived = import_graph.closure(PACKAGE, roots)
    at_import = import_graph.closure(PACKAGE, roots, lazy=False)
    assert loaded <= derived, f"loaded but not derived: {sorted(loaded - derived)}\n{run.stderr[-2000:]}"
    assert at_import <= loaded, f"derived but not loaded: {sorted(at_import - loaded)}"
    print(command, "exit", run.returncode, "; derived, only imported inside functions not called here:",
          sorted(derived - loaded))
