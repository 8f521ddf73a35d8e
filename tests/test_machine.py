"""What the machine offers: the workflow and the kernels read TRITON_INTERPRET the same way (deltanet/machine.py)."""

import pytest

from deltanet.machine import triton_interpreter_requested


@pytest.mark.parametrize("value, requested", [
    (None, False), ("", False), ("0", False), ("false", False), ("Off", False), ("no", False),
    ("1", True), ("true", True), ("yes", True),
])  # fmt: skip
def test_triton_interpret_values(monkeypatch, value, requested):
    if value is None:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    else:
        monkeypatch.setenv("TRITON_INTERPRET", value)
    assert triton_interpreter_requested() is requested
