"""Captured steps: a step function recorded once per input shape as a CUDA graph and replayed with one launch.

``optim.capture`` (``auto`` = on with CUDA, ``on``, ``off``). A full-scale step is a few hundred tiny kernels; the
GPU waits on Python between them (docs/gpu-efficiency.md). Replaying a graph costs one launch and none of the Python.
What capture needs, and how the engine gives it (PyTorch docs, "CUDA Graphs", whole-network capture):

- static inputs: each call's tensors are copied into the buffers the graph was recorded with;
- warm-up before capture on a side stream: the first ``WARMUP_CALLS`` calls of a shape run eagerly there (they are
  real steps, nothing is run twice), the next call is recorded and then replayed;
- no host synchronisation inside the step: the optimiser's learning rates and step counts are device tensors updated
  in place (``deltanet/training/optim.py``), the loss stays on the device until the epoch ends;
- autocast without its weight cache (``cache_enabled=False``: cached casts would outlive the capture).

A shape outside ``shapes`` (the short last batch of an epoch, which MAD keeps) runs eagerly. If capture fails, one
line names the cause and every later call runs eagerly: a long job never dies of an optimisation. A capture that
failed after it had begun also turns capture off for the rest of the process (``process_failure``): torch 2.11
leaves state behind that Python cannot undo (``CapturedStep._record``).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from deltanet.config import check_choice

WARMUP_CALLS = 3

# Why capture is off for the rest of this process (None while it is allowed); set by the first capture that failed
# after it had begun, read by every CapturedStep built afterwards.
process_failure: str | None = None


def capture_enabled(mode: str, device: torch.device, log: Callable[[str], None] = print) -> bool:
    """``optim.capture`` → whether steps are captured on ``device`` (``on`` without CUDA says so and runs eagerly)."""
    if check_choice("optim", "capture", mode) == "on" and device.type != "cuda":
        log(f"optim.capture: on, but CUDA graphs need a CUDA device ({device.type} here): steps run eagerly")
    return mode != "off" and device.type == "cuda"


class CapturedStep:
    """``fn(*tensors) -> Tensor``, replayed from a CUDA graph for inputs of the shapes in ``shapes``.

    ``failure`` holds why capture is off for this step (its own capture failed, or an earlier one in this process did);
    then every call is eager. ``captured`` says whether any call was replayed from a graph."""

    def __init__(self, fn: Callable[..., Tensor], enabled: bool, shapes: set[tuple], name: str,
                 log: Callable[[str], None] = print):  # fmt: skip
        self.fn, self.enabled, self.shapes, self.name, self.log = fn, enabled, shapes, name, log
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, tuple[Tensor, ...], Tensor]] = {}
        self.calls: dict[tuple, int] = {}
        self.failure: str | None = None
        self.captured = False
        if enabled and process_failure is not None:
            self.enabled = False
            self.failure = f"capture is off in this process since an earlier one failed ({process_failure})"

    def __call__(self, *inputs: Tensor) -> Tensor:
        key = tuple(tuple(x.shape) for x in inputs)
        if not self.enabled or key[0] not in self.shapes:
            return self.fn(*inputs)
        if key in self.graphs:
            graph, static_in, static_out = self.graphs[key]
            for buffer, x in zip(static_in, inputs):
                buffer.copy_(x)
            graph.replay()
            return static_out
        self.calls[key] = self.calls.get(key, 0) + 1
        if self.calls[key] <= WARMUP_CALLS:
            return self._on_side_stream(inputs)
        recorded = self._record(inputs)
        if recorded is None:
            return self.fn(*inputs)  # the call's real step, run eagerly on the stream it came on
        self.graphs[key] = recorded
        self.captured = True
        graph, _, static_out = recorded
        graph.replay()  # recording ran nothing: this replay is the call's real step
        return static_out

    def _record(self, inputs: tuple[Tensor, ...]) -> tuple[torch.cuda.CUDAGraph, tuple[Tensor, ...], Tensor] | None:
        """Record ``fn`` on copies of ``inputs``: (graph, static inputs, static output), or None when capture failed
        (then this step runs eagerly, and so does every later capture of the process if this one had begun)."""
        global process_failure
        # A pool of our own: the clean-up below needs its id, which a failed CUDAGraph will not tell.
        stream, pool = torch.cuda.current_stream(), torch.cuda.graph_pool_handle()
        static_in = tuple(x.clone() for x in inputs)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=pool):
                static_out = self.fn(*static_in)
            return graph, static_in, static_out
        except Exception as err:  # noqa: BLE001  any failure to capture means: run eagerly from now on
            while err.__context__ is not None:  # the first error (a host read), not capture_end's that followed it
                err = err.__context__
            self.failure = f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
        # Clean-up outside the except, whose traceback would keep the failed capture's tensors alive. On torch <= 2.11
        # a capture invalidated inside fn (a host read, say) makes capture_end raise before it ends the caching
        # allocator's routing into the pool, and torch.cuda.graph.__exit__ then never restores the stream it switched
        # to (pytorch/pytorch#180395 ends the routing first, after 2.11; #190308 lists what an abandoned capture still
        # leaves). Left so, the next empty_cache() (a capture's first act) fails the allocator's
        # captures_underway.empty() assertion, which can abort the process; what cannot be undone from Python (the
        # pinned-memory allocator's routing, the generators' capture states) is why capture then stays off.
        began = torch.cuda.current_stream() != stream  # left on the graph's own stream: the capture had begun
        torch.cuda.set_stream(stream)
        began |= end_allocation_to_pool(pool)
        self.enabled = False
        if began:
            process_failure = f"the {self.name}: {self.failure}"
        scope = "it and every later capture in this process run" if began else "it runs"
        self.log(f"warning: capturing the {self.name} as a CUDA graph failed ({self.failure}); {scope} eagerly")
        return None

    def _on_side_stream(self, inputs: tuple[Tensor, ...]) -> Tensor:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            out = self.fn(*inputs)
        torch.cuda.current_stream().wait_stream(stream)
        return out


def end_allocation_to_pool(pool: tuple[int, int]) -> bool:
    """End the caching allocator's routing into ``pool`` and release the pool if a failed capture left it routing
    (torch <= 2.11); whether it had. A released pool's memory goes back to the device at the next ``empty_cache``."""
    device = torch.cuda.current_device()
    try:
        torch._C._cuda_endAllocateToPool(device, pool)
    except RuntimeError:  # "not currently recording": capture_end ended it itself, or the capture never began
        return False
    torch._C._cuda_releasePool(device, pool)
    return True
