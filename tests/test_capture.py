"""Captured steps when capture fails (deltanet/training/capture.py).

On CPU, ``FakeCuda`` plays the part of ``torch.cuda`` as torch 2.11 behaves: ``torch.cuda.graph`` switches to its
capture stream and routes the caching allocator into the graph's pool; a host read inside the capture invalidates it,
and then ``capture_end`` raises without ending the routing or restoring the stream; ``empty_cache`` with routing
still on fails the allocator's ``captures_underway.empty()`` assertion (an abort in the real process). On CUDA, a
step that really reads a value on the host.
"""

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_fused import needs_cuda

import deltanet.training.capture as capture
from deltanet.training.capture import WARMUP_CALLS, CapturedStep


class FakeCuda:
    """The parts of ``torch.cuda`` a CapturedStep uses, with torch 2.11's behaviour on a failed capture."""

    def __init__(self):
        self.default = object()
        self.stream_now = self.default
        self.routing: set[tuple] = set()  # pools the allocator routes into (its captures underway)
        self.released: list[tuple] = []
        self.capturing = False
        self.pools = 0
        self.graphs_entered = 0

    def install(self, monkeypatch) -> None:
        cuda, fake = torch.cuda, self
        for name in ("current_stream", "set_stream", "stream", "Stream", "graph", "graph_pool_handle",
                     "current_device", "empty_cache"):  # fmt: skip
            monkeypatch.setattr(cuda, name, getattr(self, name))
        monkeypatch.setattr(cuda, "CUDAGraph", FakeGraph)
        monkeypatch.setattr(torch._C, "_cuda_endAllocateToPool", self.end_allocate_to_pool, raising=False)
        monkeypatch.setattr(torch._C, "_cuda_releasePool", lambda device, pool: fake.released.append(pool),
                            raising=False)  # fmt: skip
        monkeypatch.setattr(capture, "process_failure", None)

    def current_stream(self):
        stream = self.stream_now
        return stream if isinstance(stream, FakeStream) else FakeStream(self, stream)

    def set_stream(self, stream):
        self.stream_now = stream.handle

    def Stream(self):
        return FakeStream(self, object())

    @contextlib.contextmanager
    def stream(self, stream):
        before, self.stream_now = self.stream_now, stream.handle
        yield
        self.stream_now = before

    def graph_pool_handle(self):
        self.pools += 1
        return (0, self.pools)

    def current_device(self):
        return 0

    def empty_cache(self):
        if self.routing:
            raise RuntimeError("captures_underway.empty() INTERNAL ASSERT FAILED (the process would abort here)")

    def end_allocate_to_pool(self, device, pool):
        if pool not in self.routing:
            raise RuntimeError("endAllocatePool: not currently recording to mempool_id")
        self.routing.remove(pool)

    def host_read(self, x: torch.Tensor) -> float:
        """``x.item()`` as CUDA answers it: refused while a stream captures (and the capture is invalidated)."""
        if self.capturing:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
        return x.sum().item()

    @contextlib.contextmanager
    def graph(self, graph, pool=None):
        pool = pool or ("the graph's own pool",)
        self.graphs_entered += 1
        self.empty_cache()  # torch.cuda.graph.__enter__ frees what it can first
        self.stream_now, self.capturing = object(), True
        self.routing.add(pool)
        try:
            yield
        except Exception as err:  # capture_end raises before it ends the routing or restores the stream (<= 2.11)
            self.capturing = False
            raise RuntimeError("CUDA error: operation failed due to a previous error during capture") from err
        self.capturing = False
        self.routing.remove(pool)
        self.stream_now = self.default


class FakeGraph:
    def replay(self):
        """Nothing: the fake's capture ran the step on CPU, so the captured call's output is already there."""


class FakeStream:
    def __init__(self, cuda: FakeCuda, handle):
        self.cuda, self.handle = cuda, handle

    def __eq__(self, other):
        return isinstance(other, FakeStream) and self.handle is other.handle

    def wait_stream(self, other):
        pass


@pytest.fixture
def cuda(monkeypatch):
    fake = FakeCuda()
    fake.install(monkeypatch)
    return fake


def test_a_step_that_breaks_capture_runs_eagerly_and_turns_capture_off_in_the_process(cuda):
    lines = []
    step = CapturedStep(lambda x: x * 2 + cuda.host_read(x), True, {(3,)}, "training step", lines.append)
    x = torch.arange(3.0)
    outs = [step(x) for _ in range(WARMUP_CALLS + 3)]
    assert all(torch.equal(o, x * 2 + 3.0) for o in outs)  # the failed call and every later one ran eagerly
    assert cuda.stream_now is cuda.default, "the failed capture's stream is still current"
    assert cuda.routing == set() and cuda.released == [(0, 1)], "the allocator still routes into the graph's pool"
    cuda.empty_cache()  # would abort the process with the routing left on
    assert step.failure == "RuntimeError: CUDA error: operation not permitted when stream is capturing"
    assert not step.captured and len(lines) == 1
    assert lines[0].startswith("warning: capturing the training step as a CUDA graph failed (RuntimeError: ")
    assert lines[0].endswith("; it and every later capture in this process run eagerly")

    later = CapturedStep(lambda x: x + 1, True, {(3,)}, "evaluation step", lines.append)
    assert [torch.equal(later(x), x + 1) for _ in range(WARMUP_CALLS + 2)] == [True] * (WARMUP_CALLS + 2)
    assert not later.captured and cuda.graphs_entered == 1 and len(lines) == 1
    assert later.failure == ("capture is off in this process since an earlier one failed (the training step: "
                             f"{step.failure})")  # fmt: skip


def test_a_capture_that_never_began_leaves_later_steps_capturing(cuda, monkeypatch):
    """A failure before capture begins (here: torch.cuda.graph itself refuses) touches no stream and no pool: only
    that step runs eagerly, and a step built afterwards is captured and replayed."""
    lines = []
    graph = cuda.graph
    monkeypatch.setattr(torch.cuda, "graph", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no capture")))
    step = CapturedStep(lambda x: x + 1, True, {(3,)}, "training step", lines.append)
    x = torch.arange(3.0)
    assert all(torch.equal(step(x), x + 1) for _ in range(WARMUP_CALLS + 2))
    assert lines == ["warning: capturing the training step as a CUDA graph failed (RuntimeError: no capture); "
                     "it runs eagerly"]  # fmt: skip
    assert capture.process_failure is None and cuda.released == []

    monkeypatch.setattr(torch.cuda, "graph", graph)
    later = CapturedStep(lambda x: x * 3, True, {(3,)}, "training step", lines.append)
    outs = [later(x + i) for i in range(WARMUP_CALLS + 1)]
    assert all(torch.equal(o, (x + i) * 3) for i, o in enumerate(outs))
    assert later.captured and later.failure is None and len(lines) == 1 and cuda.graphs_entered == 1


def host_read_breaks_capture() -> None:
    """The CUDA scenario, run in a process of its own (``python -c``) by the test below."""
    lines = []
    x = torch.arange(1 << 16, device="cuda", dtype=torch.float32)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    reserved = torch.cuda.memory_reserved()
    stream = torch.cuda.current_stream()
    step = CapturedStep(lambda t: t * 2 + t.sum().item(), True, {tuple(x.shape)}, "training step", lines.append)
    expected = x * 2 + x.sum().item()
    outs = [step(x) for _ in range(WARMUP_CALLS + 2)]
    assert all(torch.equal(o, expected) for o in outs)
    assert torch.cuda.current_stream() == stream
    assert step.failure and not step.captured and capture.process_failure, (step.failure, capture.process_failure)
    assert len(lines) == 1 and "every later capture in this process run eagerly" in lines[0], lines
    del outs, expected
    torch.cuda.synchronize()
    torch.cuda.empty_cache()  # failed the allocator's captures_underway.empty() assertion on torch 2.11 before
    assert torch.cuda.memory_reserved() == reserved, (torch.cuda.memory_reserved(), reserved)

    later = CapturedStep(lambda t: t + 1, True, {tuple(x.shape)}, "evaluation step", lines.append)
    assert all(torch.equal(later(x), x + 1) for _ in range(WARMUP_CALLS + 2)) and not later.captured
    assert later.failure and len(lines) == 1


@pytest.mark.cuda
@needs_cuda
def test_a_host_read_breaks_capture_then_the_step_runs_eagerly_and_memory_frees():
    """On CUDA: a step with ``.item()`` inside invalidates its capture. The call still returns its eager result, the
    stream is the caller's again, ``empty_cache`` runs and frees the failed capture's pool (reserved memory back to
    what it was before the step), and CapturedSteps built afterwards stay eager. In a process of its own: a failed
    capture is what the process switch guards against, so later tests must not share its process (and an abort
    shows here as a failed test, not a dead test run)."""
    done = subprocess.run([sys.executable, "-c", "import test_capture; test_capture.host_read_breaks_capture()"],
                          cwd=Path(__file__).parent, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
