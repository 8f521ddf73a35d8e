"""Run ``deltanet train`` processes quickly for the crash tests: each is forked from a server that imported torch and
the job once (``multiprocessing``'s forkserver), so a job costs its training, not a 2-3 s Python start."""

from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path

_CONTEXT = multiprocessing.get_context("forkserver")
# what every job imports sooner or later: the job and parquet
_CONTEXT.set_forkserver_preload(["deltanet.cli.train", "deltanet.training.job", "pyarrow.parquet"])


def _train(argv: list[str], log: str, env: dict[str, str]) -> None:
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    from deltanet.cli.train import main

    sys.exit(main(argv))


def train_process(argv: list[str], log: Path, env: dict[str, str], timeout: float = 300) -> int:
    """Exit code of ``deltanet train argv`` in a new process with ``env`` added, its output appended to ``log``
    (a negative code: killed by that signal)."""
    process = _CONTEXT.Process(target=_train, args=(argv, str(log), env))
    process.start()
    process.join(timeout)
    if process.exitcode is None:
        process.kill()
        raise TimeoutError(f"deltanet train {' '.join(argv)} still running after {timeout} s")
    return process.exitcode
