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
line names the cause and every later call runs eagerly: a long job never dies of an optimisation.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

CAPTURE_MODES = ("auto", "on", "off")
WARMUP_CALLS = 3


def capture_enabled(mode: str, device: torch.device, log: Callable[[str], None] = print) -> bool:
    """``optim.capture`` → whether steps are captured on ``device`` (``on`` without CUDA says so and runs eagerly)."""
    if mode not in CAPTURE_MODES:
        raise ValueError(f"optim.capture must be one of {', '.join(CAPTURE_MODES)}; got {mode!r}")
    if mode == "on" and device.type != "cuda":
        log(f"optim.capture: on, but CUDA graphs need a CUDA device ({device.type} here): steps run eagerly")
    return mode != "off" and device.type == "cuda"


class CapturedStep:
    """``fn(*tensors) -> Tensor``, replayed from a CUDA graph for inputs of the shapes in ``shapes``.

    ``failure`` holds the cause once capture failed (then every call is eager); ``captured`` says whether any call
    was replayed from a graph."""

    def __init__(self, fn: Callable[..., Tensor], enabled: bool, shapes: set[tuple], name: str,
                 log: Callable[[str], None] = print):  # fmt: skip
        self.fn, self.enabled, self.shapes, self.name, self.log = fn, enabled, shapes, name, log
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, tuple[Tensor, ...], Tensor]] = {}
        self.calls: dict[tuple, int] = {}
        self.failure: str | None = None
        self.captured = False

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
        try:
            static_in = tuple(x.clone() for x in inputs)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.fn(*static_in)
        except Exception as err:  # noqa: BLE001  any failure to capture means: run eagerly from now on
            self.failure = f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
            self.enabled = False
            self.log(f"warning: capturing the {self.name} as a CUDA graph failed ({self.failure}); running it eagerly")
            torch.cuda.synchronize()
            return self.fn(*inputs)
        self.graphs[key] = (graph, static_in, static_out)
        self.captured = True
        graph.replay()  # recording ran nothing: this replay is the call's real step
        return static_out

    def _on_side_stream(self, inputs: tuple[Tensor, ...]) -> Tensor:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            out = self.fn(*inputs)
        torch.cuda.current_stream().wait_stream(stream)
        return out
