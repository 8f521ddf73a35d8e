"""A job killed at any instant reruns to the same rows.

The instants are the job's persistence points (``deltanet/io.py``): before and after each atomic rename (job.json,
every epoch's checkpoint, finished.parquet, the run file), each progress line, each removal (a finished group's
checkpoint, the checkpoint folder's files and the folder). An uninterrupted job lists the points it passes; the job
is then stopped at each in turn, once by SIGKILL and once by SIGTERM (SLURM sends SIGTERM, waits KillWait, then
SIGKILL), and rerun: the rerun exits 0, its rows equal the uninterrupted job's bit for bit (timing aside), nothing is
set aside and nothing is left behind. As SQLite's crash tests stop the writer at every write, and ALICE (OSDI 2014)
enumerates an update protocol's persistence points. A static check keeps every file change of the job inside
``deltanet/io.py``, so a new write cannot bypass the points.
"""

import ast
import re
import signal
from pathlib import Path

import pandas as pd
import pytest
import torch
from crash_harness import train_process
from test_train import TIMING, write_config

import deltanet
from deltanet.import_graph import command_sources
from deltanet.io import CRASH_ENV, TRACE_ENV

VARIANT, TASK = "delta_net_4layer", "context_recall"
# 3 runs in fused groups of at most 2: a fused group of 2, then a group of 1 that the rerun resumes into
OPTIM = {"max_epochs": 2, "stop_accuracy": 1.0, "lrs": [1e-2, 5e-3, 2e-3], "fuse_runs": 2}


def job_argv(config: Path, out: Path) -> list[str]:
    return ["--variant", VARIANT, "--task", TASK, "--config", str(config), "--out", str(out), "--scale", "test",
            "--device", "cpu", "--threads", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The job run once to its end: (config, its rows, the persistence points it passed, in order)."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    config, out, trace = write_config(tmp, **OPTIM), tmp / "runs.parquet", tmp / "points.txt"
    assert train_process(job_argv(config, out), tmp / "log.txt", {TRACE_ENV: str(trace)}) == 0
    return config, pd.read_parquet(out).drop(columns=TIMING), trace.read_text().splitlines()


def test_the_job_passes_every_kind_of_persistence_point(uninterrupted):
    """The trace holds every step the job's protocol persists, in order, for both groups."""
    config, rows, points = uninterrupted
    assert list(rows["group_size"]) == [2, 2, 1]
    expected_in_order = [
        "job.json written, before its rename", "job.json renamed into place",
        "runs-0001-0002.pt written, before its rename", "runs-0001-0002.pt renamed into place",
        "progress of run 1 after epoch 1", "progress of run 2 after epoch 1",
        "progress of run 2 after epoch 2",
        "finished.parquet written, before its rename", "finished.parquet renamed into place",
        "runs-0001-0002.pt before its removal", "runs-0001-0002.pt removed",
        "runs-0003-0003.pt renamed into place", "progress of run 3 after epoch 2",
        "runs.parquet written, before its rename", "runs.parquet renamed into place",
        "finished.parquet removed", "job.json removed",
        "runs.parquet.ckpt before its removal", "runs.parquet.ckpt removed",
    ]  # fmt: skip
    positions = [points.index(point) for point in expected_in_order]
    assert positions == sorted(positions)
    assert points.count("runs-0001-0002.pt renamed into place") == OPTIM["max_epochs"]


@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_a_job_stopped_at_any_persistence_point_reruns_to_the_same_rows(uninterrupted, signal_name, tmp_path):
    config, expected, points = uninterrupted
    stopped_code = -signal.SIGKILL if signal_name == "SIGKILL" else 128 + signal.SIGTERM
    for k, point in enumerate(points, start=1):
        folder = tmp_path / f"{k:03d}"
        folder.mkdir()
        out, log = folder / "runs.parquet", folder / "log.txt"
        code = train_process(job_argv(config, out), log, {CRASH_ENV: f"{signal_name}:{k}"})
        text = log.read_text()
        assert code == stopped_code and f"persistence point {k} ({point}): {signal_name}" in text, (point, text)
        if signal_name == "SIGTERM":
            last = text.splitlines()[-1]
            assert last.startswith("deltanet train: stopped by SIGTERM; a rerun "), (point, text)
            if said := re.search(r"after epoch (\d+) from (\S+)$", last):  # the epoch the checkpoint holds
                states = torch.load(said[2], weights_only=False)["states"].values()
                assert max(state["epoch"] for state in states) == int(said[1]), (point, last)
        assert train_process(job_argv(config, out), log, {}) == 0, (point, log.read_text())
        pd.testing.assert_frame_equal(pd.read_parquet(out).drop(columns=TIMING), expected, obj=point)
        assert sorted(p.name for p in folder.iterdir()) == ["log.txt", "runs.parquet"], point  # nothing left over
    print(f"stopped the job at {len(points)} persistence points by {signal_name}, each rerun equal")


# Calls that change files, by the expression that names what they change: a path method's receiver, a writer's first
# argument, the arguments of os/shutil/torch functions
PATH_METHODS = {"unlink", "rename", "rmdir", "write_text", "write_bytes", "touch", "symlink_to"}
WRITER_METHODS = {"to_parquet", "to_csv"}
MODULE_FUNCTIONS = {"os": {"remove", "unlink", "rename", "replace", "rmdir", "removedirs"}, "torch": {"save"},
                    "shutil": {"rmtree", "move", "copy", "copyfile", "copy2", "copytree"}}  # fmt: skip
# what is fine to write: the temp path deltanet.io.atomic_path hands out, an in-memory buffer
SAFE_TARGETS = {"tmp", "buffer"}


def changed(call: ast.Call) -> list[ast.expr] | None:
    """The expressions naming what ``call`` changes on disk (None: it changes nothing)."""
    func = call.func
    if isinstance(func, ast.Name) and func.id == "open":
        mode = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "mode"), None)
        writes = isinstance(mode, ast.Constant) and set(str(mode.value)) & set("wax+")
        return call.args[:1] if writes else None
    if not isinstance(func, ast.Attribute):
        return None
    if isinstance(func.value, ast.Name) and func.attr in MODULE_FUNCTIONS.get(func.value.id, ()):
        return call.args
    if func.attr in PATH_METHODS or (func.attr == "replace" and len(call.args) == 1 and not call.keywords):
        return [func.value]
    return call.args[:1] if func.attr in WRITER_METHODS else None


def file_changes(path: Path) -> list[str]:
    """``file:line call`` of each file change in ``path`` that is not to a temp path or a buffer."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        targets = changed(node) if isinstance(node, ast.Call) else None
        if targets is not None and not any(isinstance(t, ast.Name) and t.id in SAFE_TARGETS for t in targets):
            found.append(f"{path.name}:{node.lineno} {ast.unparse(node)[:80]}")
    return found


def test_every_file_change_of_a_job_passes_persistence_points():
    """Each module ``deltanet train`` loads changes files only through deltanet/io.py (whose steps are the points),
    or writes the temp file atomic_path hands it: a write added elsewhere fails here, before it can escape the crash
    tests."""
    package = Path(deltanet.__file__).parent
    sources = [Path(p) for p in command_sources(package, "train", f"deltanet.variants.{VARIANT}",
                                                f"deltanet.tasks.{TASK}")]  # fmt: skip
    assert package / "training" / "job.py" in sources and package / "io.py" in sources
    changes = [change for path in sources if path != package / "io.py" for change in file_changes(path)]
    assert changes == []
    assert file_changes(package / "io.py")  # the scan sees the changes io.py makes


def test_the_scan_finds_a_write_that_bypasses_the_points(tmp_path):
    source = tmp_path / "job.py"
    source.write_text("def f(ckpt, tmp, df):\n    tmp.write_bytes(b'')\n    ckpt.unlink()\n    df.to_parquet(ckpt)\n")
    assert [c.split(" ")[0] for c in file_changes(source)] == ["job.py:3", "job.py:4"]
