"""Error measures for comparing an op against its reference (fla ``fla/utils/testing.py`` ``assert_close``)."""

from __future__ import annotations

from torch import Tensor


def rms_ratio(ref: Tensor, out: Tensor) -> float:
    """RMS(ref − out) / (RMS(ref) + 1e-8), computed in fp64."""
    ref, out = ref.double(), out.double()
    return ((ref - out).pow(2).mean().sqrt() / (ref.pow(2).mean().sqrt() + 1e-8)).item()


def max_abs(ref: Tensor, out: Tensor) -> float:
    return (ref.double() - out.double()).abs().max().item()


def assert_close(name: str, ref: Tensor, out: Tensor, ratio: float, atol: float = 1e-6) -> None:
    """Pass when max |ref − out| ≤ atol or the RMS ratio < ``ratio``; the failure names the tensor and both errors."""
    err, abs_err = rms_ratio(ref, out), max_abs(ref, out)
    if abs_err <= atol:
        return
    assert not out.isnan().any(), f"{name}: output has NaN"
    assert err < ratio, f"{name}: RMS-ratio error {err:.3e} ≥ {ratio:.1e} (max abs {abs_err:.3e})"
