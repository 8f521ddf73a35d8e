"""Atomic writes: the target appears whole or not at all, with the usual permissions."""

import os
import stat

import pytest

from deltanet.io import atomic_path, write_text_atomic


def test_atomic_write_creates_file_with_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "sub" / "out.txt", "hello")
    finally:
        os.umask(old)
    target = tmp_path / "sub" / "out.txt"
    assert target.read_text() == "hello"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_failed_write_leaves_no_target_and_no_temp_file(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []
