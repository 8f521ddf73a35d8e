"""Every change a job makes to files goes through here: atomic writes (a temp file beside the target, then a rename,
so readers never see half a file), renames aside, removals.

Each step passes a *persistence point* before and after it: the instants at which a killed job leaves something
different on disk. The crash tests (``tests/test_crash_points.py``) list the points an uninterrupted job passes
(``DELTANET_PERSISTENCE_TRACE=<file>``) and stop a job at each in turn (``DELTANET_CRASH_AT=<SIGNAL>:<k>``: the
k-th point sends the process SIGNAL), as SQLite's crash tests stop the writer at every write. Unset, a point costs
one environment lookup.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TRACE_ENV, CRASH_ENV = "DELTANET_PERSISTENCE_TRACE", "DELTANET_CRASH_AT"
_points_passed = 0


def persistence_point(label: str) -> None:
    """Count this instant; traced and/or stopped at when the test variables ask for it."""
    global _points_passed
    trace, crash = os.environ.get(TRACE_ENV), os.environ.get(CRASH_ENV)
    if not (trace or crash):
        return
    _points_passed += 1
    if trace:
        with open(trace, "a") as file:
            file.write(label + "\n")
    if crash:
        name, _, k = crash.partition(":")
        if int(k) == _points_passed:
            print(f"persistence point {k} ({label}): {name}", flush=True)
            os.kill(os.getpid(), signal.Signals[name])


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto ``target``, on error delete it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs should be as readable as any other file
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        persistence_point(f"{target.name} written, before its rename")
        os.replace(tmp_path, target)
        persistence_point(f"{target.name} renamed into place")
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def remove_leftover_temps(target: str | Path) -> None:
    """Delete the temp files a killed :func:`atomic_path` left for ``target`` (only its own writer may call this)."""
    target = Path(target)
    for tmp in target.parent.glob(f".{target.name}.*.tmp"):
        tmp.unlink(missing_ok=True)


def set_aside(path: Path) -> Path:
    """Rename ``path`` (a file or folder) to the first free ``<name>.unusable[.N]`` beside it; return the new path."""
    target, n = path.with_name(path.name + ".unusable"), 1
    while target.exists():
        target, n = path.with_name(f"{path.name}.unusable.{n}"), n + 1
    persistence_point(f"{path.name} before it is set aside")
    path.rename(target)
    persistence_point(f"{path.name} set aside as {target.name}")
    return target


def remove(path: Path) -> None:
    """Delete the file or folder tree ``path`` (gone already: nothing)."""
    if not os.path.lexists(path):
        return
    persistence_point(f"{path.name} before its removal")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    persistence_point(f"{path.name} removed")


@contextmanager
def signals_held(*signums: int) -> Iterator[None]:
    """Within: ``signums`` wait (``pthread_sigmask``) and arrive on exit, so a step that writes a file and the
    bookkeeping that names it complete together (a SIGTERM between the two would report the wrong state)."""
    if threading.current_thread() is not threading.main_thread():  # signals reach only the main thread anyway
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signums)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
