"""The Triton kernel specialisations each part of the GPU check launches, derived without a GPU, and the warm-up.

    python benchmarks/kernel_plan.py --warm I/N --parts "kernels,engine check,..."   # the compile part of the check
    python benchmarks/kernel_plan.py --compile-sm90 --parts "full-scale jobs"        # no GPU: smem and spills

An op call (:class:`OpCall`) is what fixes which kernels compile: the rule, head count and dims, chunk size, the
dtypes of q/k/v/β and g, an initial state, backward or not, a final-state gradient or not (batch and length are
kept for the record). Its specialisations are the (kernel, key) of every launch its forward and backward make,
recorded by running the kernels' own wrappers (``deltanet/ops/kernels/function.py``: ``run_kernels``) on meta
tensors with every kernel replaced by a recorder: nothing runs, and each launch is keyed as Triton keys its cache
for sm_90 (``native_specialize_impl`` of its NVIDIA backend: pointer dtype and 16-byte alignment, each integer's
class — 1, divisible by 16, other — unless ``do_not_specialize``, constexpr values, warps and stages).

:func:`part_calls` lists the op calls of every part after the compile part, from the code each part runs: the
kernel benchmark's shape groups, the models a part trains (their mixer's head shape, the scale's chunk, members ×
batch, the dtypes the model hands the op under bf16 autocast, the tasks' real row lengths), verify-kernels' grids.
``--warm`` runs one small call (batch 1, two chunks) per distinct call of the given parts, its share of them, on the
GPU: ``tests/test_kernel_plan.py`` checks that these small calls compile every specialisation the parts launch.
Without a GPU ``--warm`` records the launches instead of running them (one row per call either way).
``--compile-sm90`` compiles the parts' specialisations for sm_90 with the installed Triton, without a GPU, and
fails on a shared-memory overflow or a bf16 register spill (``tests/test_kernel_plan.py`` runs it with the image's
Triton, ``requirements/cuda.txt``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from rows import emit, expect  # noqa: E402  (benchmarks/ is this script's folder)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclasses.dataclass(frozen=True)
class OpCall:
    """One call of the chunked (gated) delta rule on the kernels."""

    op: str  # "delta" | "gated"
    B: int
    T: int
    H: int
    Dk: int
    Dv: int
    C: int
    dtype: str = "bf16"  # q, k, v, β
    g_dtype: str = "fp32"
    h0: bool = False
    grad: bool = True  # forward and backward (training), or the forward only (evaluation)
    state_grad: bool = False  # the loss uses the final state

    def small(self) -> OpCall:
        """The same kernels at batch 1 and two chunks: what the warm-up runs (the backward covers the forward)."""
        return dataclasses.replace(self, B=1, T=2 * self.C, grad=True)

    @property
    def label(self) -> str:
        return (f"{self.op} B={self.B} T={self.T} H={self.H} Dk={self.Dk} Dv={self.Dv} C={self.C} {self.dtype}"
                f"{' h0' if self.h0 else ''}{'' if self.grad else ' forward'}{' dS_T' if self.state_grad else ''}")

    def inputs(self, device: str) -> dict:
        """Inputs of the harness's shapes and dtypes (``deltanet/ops/testing.py``: g and h0 fp32), leaves with
        gradients when ``grad``; values are not drawn (meta tensors have none, and compiles do not read them)."""
        dt = DTYPES[self.dtype]
        shapes = {"q": ((self.B, self.T, self.H, self.Dk), dt), "k": ((self.B, self.T, self.H, self.Dk), dt),
                  "v": ((self.B, self.T, self.H, self.Dv), dt), "beta": ((self.B, self.T, self.H), dt)}  # fmt: skip
        if self.op == "gated":
            shapes["g"] = ((self.B, self.T, self.H), DTYPES[self.g_dtype])
        if self.h0:
            shapes["initial_state"] = ((self.B, self.H, self.Dk, self.Dv), torch.float32)
        return {n: torch.zeros(s, dtype=d, device=device).requires_grad_(self.grad) for n, (s, d) in shapes.items()}


def run_call(call: OpCall, device: str) -> None:
    """The call's forward (and backward of o·1, plus the final state's when ``state_grad``) on the kernels."""
    from deltanet.ops.kernels.function import run_kernels

    x = call.inputs(device)
    with torch.set_grad_enabled(call.grad):
        o, ht = run_kernels(x["q"], x["k"], x["v"], x["beta"], x.get("g"), call.Dk**-0.5, x.get("initial_state"),
                            call.C, False)  # fmt: skip
        if call.grad:
            outs = [o, ht] if call.state_grad else [o]
            torch.autograd.backward(outs, [torch.ones_like(t) for t in outs])


class _Recorder:
    """Stands in for a ``@triton.jit`` kernel: ``kernel[grid](*args, **kwargs)`` records the launch's key."""

    def __init__(self, kernel, seen: list):
        self.kernel, self.seen = kernel, seen
        self.signature = inspect.signature(kernel.fn)
        # JITFunction keeps it as an attribute, the interpreter's InterpretedFunction among its kwargs
        self.not_specialised = set(getattr(kernel, "do_not_specialize", None)
                                   or getattr(kernel, "kwargs", {}).get("do_not_specialize") or ())  # fmt: skip

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.seen.append(self.key(args, kwargs))

    def key(self, args: tuple, kwargs: dict) -> tuple:
        from triton._C.libtriton import native_specialize_impl
        from triton.backends.nvidia.compiler import CUDABackend

        params = self.signature.parameters
        bound = self.signature.bind(*args, **{k: v for k, v in kwargs.items() if k in params}).arguments
        spec = []
        for name, param in params.items():
            if "constexpr" in str(param.annotation):
                spec.append((name, "constexpr", bound[name]))
            else:
                specialise = name not in self.not_specialised
                spec.append((name, *native_specialize_impl(CUDABackend, bound[name], False, specialise, True)[:2]))
        options = tuple(sorted((k, v) for k, v in kwargs.items() if k not in params))  # num_warps, num_stages
        return self.kernel.fn.__name__, tuple(spec), options


@contextlib.contextmanager
def recorded_launches():
    """Inside, every launch of our kernels appends its (kernel, key) to the yielded list instead of running, with
    the GPU's launch configuration (``deltanet/ops/kernels/launch.py``)."""
    from deltanet.ops.kernels import backward, chunk_output, chunk_state, launch, wy

    seen: list = []
    saved = [(m, name, kernel) for m in (wy, chunk_state, chunk_output, backward)
             for name, kernel in vars(m).items() if name.endswith("_kernel") and hasattr(kernel, "fn")]  # fmt: skip
    interpreted = launch.interpreter_enabled
    try:
        for module, name, kernel in saved:
            setattr(module, name, _Recorder(kernel, seen))
        launch.interpreter_enabled = lambda: False
        yield seen
    finally:
        launch.interpreter_enabled = interpreted
        for module, name, kernel in saved:
            setattr(module, name, kernel)


def specialisations(calls) -> set:
    """The (kernel, key) pairs the calls launch on a GPU."""
    found = set()
    for call in set(calls):
        with recorded_launches() as seen:
            run_call(call, "meta")
        found.update(seen)
    return found


def op_dtypes(config: dict, scale: str, op: str) -> tuple[str, str]:
    """(dtype of q/k/v/β, dtype of g) that the scale's model hands the ``op`` rule under bf16 autocast: one forward
    of the baseline model on the CPU, recorded (``deltanet.ops.dispatch.record_input_dtypes``; docs/deltanet-math.md
    §7: the same dtypes as under CUDA autocast)."""
    from deltanet.model import ModelConfig, build_model
    from deltanet.ops.dispatch import record_input_dtypes
    from deltanet.variants.catalog import BASELINE_VARIANTS

    model_cfg = config["scales"][scale]["model"]
    cfg = ModelConfig(vocab_size=16, **{**model_cfg, "variant": BASELINE_VARIANTS[op], "kernels": "naive"})
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16), record_input_dtypes() as seen:
        build_model(cfg)(torch.zeros(1, cfg.chunk_size, dtype=torch.long))
    names = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
    return names[seen[0]["q"]], names.get(seen[0]["g"], "fp32")


def row_length(setting) -> int:
    """The length of the setting's rows as its task's generator makes them (``seq_len − 1`` for MAD's tasks)."""
    from deltanet.tasks import Setting, make_datasets

    small = Setting(setting.task, setting.id, {**setting.fields, "num_train_examples": 4, "num_test_examples": 4})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 4 rows may repeat: the leakage check's warning means nothing here
        return int(make_datasets(small).train_inputs.shape[1])


def model_calls(config: dict, scale: str, variants, members: int, lengths, evaluate: bool = True) -> list[OpCall]:
    """The op calls of training (and evaluating) fused groups of ``members`` of each variant that runs on the
    kernels at the scale, at each length: the batch is members × the scale's batch (vmap folds members into it)."""
    from deltanet.model import ModelConfig
    from deltanet.ops.dispatch import use_kernels
    from deltanet.variants import get_variant

    scale_cfg = config["scales"][scale]
    optim, model = scale_cfg["optim"], ModelConfig(vocab_size=2, **scale_cfg["model"])
    calls = []
    for name in variants:
        variant = get_variant(name)
        H, Dk, Dv = model.layer_shape(variant.mixer)
        if not use_kernels(config["kernels"], torch.device("cuda"), model.chunk_size, Dk, variant.uses_kernel):
            continue
        op = "gated" if variant.mixer == "gated" else "delta"
        dtype, g_dtype = op_dtypes(config, scale, op)
        for T in lengths:
            base = OpCall(op, members * optim["batch_size"], T, H, Dk, Dv, model.chunk_size, dtype, g_dtype)
            calls.append(base)
            if evaluate:
                calls.append(dataclasses.replace(base, B=members * optim["eval_batch_size"], grad=False))
    return calls


def verify_calls(quick: bool) -> list[OpCall]:
    """verify-kernels' cases on CUDA (``deltanet/verify_kernels.py``: the harness's inputs, o and the final state
    in the loss)."""
    from deltanet.verify_kernels import make_cases

    return [OpCall(c.op, c.B, c.T, c.H, c.D, c.D, c.chunk_size, c.dtype, "fp32", c.h0, True, True)
            for c in make_cases("cuda", quick)]  # fmt: skip


def part_calls(config_path: Path = REPO / "config.yaml") -> dict[str, list[OpCall]]:
    """Per part of the GPU check after the compile part (and the full-scale jobs themselves), its op calls."""
    import engine_check
    import kernels
    import train_throughput
    import workflow_e2e

    from deltanet.config import load_config
    from deltanet.tasks import TASK_IDS, task_settings
    from deltanet.variants import variant_names
    from deltanet.variants.catalog import BASELINE_VARIANTS

    config = load_config(config_path)
    full = config["scales"]["full"]
    runs = len(full["optim"]["lrs"]) * len(full["optim"]["weight_decays"]) * len(config["seeds"])
    baselines = list(BASELINE_VARIANTS.values())

    def settings(task: str, grid: str) -> list:
        return task_settings(task, grid, full["task_overrides"].get(task, {}))

    bench = [OpCall(g.op, b, T, g.H, g.Dk, g.Dv, g.C) for g in kernels.shape_groups(config_path, "full", True)
             for T in g.Ts for b in {min(g.B, kernels.ERR_BATCH), g.B}]  # fmt: skip
    seq = train_throughput.SEQ_LEN
    recall = row_length(settings(workflow_e2e.TASK, "baseline")[0])
    return {
        "kernels": bench,
        "variant ratios": model_calls(config, "full", variant_names(), runs, [seq], evaluate=False),
        "protocol cost": model_calls(config, "full", baselines, runs,
                                     {row_length(settings(t, "baseline")[0]) for t in TASK_IDS}),
        "engine check": model_calls(config, "full", engine_check.MODELS, engine_check.MEMBERS, [seq]),
        "fused vs solo": model_calls(config, "full", variant_names(), 1, [seq], evaluate=False)
        + model_calls(config, "full", variant_names(), runs, [seq], evaluate=False),
        "short conv": [],  # no Triton kernel
        "workflow": model_calls(config, "full", workflow_e2e.MODELS, workflow_e2e.MEMBERS, [recall])
        + verify_calls(quick=True),
        "verify-kernels": verify_calls(quick=False),
        "full-scale jobs": model_calls(config, "full", baselines, runs,
                                       {row_length(s) for t in TASK_IDS for s in settings(t, "mad")}),
    }  # fmt: skip


def warm_calls(parts: list[str], calls: dict[str, list[OpCall]]) -> list[OpCall]:
    """One small call per distinct call of ``parts``, in the parts' order."""
    return list(dict.fromkeys(call.small() for part in parts for call in calls[part]))


SMEM_LIMIT = 232448  # bytes of shared memory per block on sm_90 (H100/H200: 227 KiB)


def compile_sm90(keys) -> int:
    """Compile every (kernel, key) for sm_90 with the installed Triton, no GPU needed, as ``JITFunction._pack_args``
    turns a launch's key into a compile; print registers, spill stack and shared memory per kernel. Returns 1 when
    one needs more shared memory than an H100 block has (it would not launch) or spills registers in bf16."""
    import re
    import subprocess
    import tempfile

    import triton
    from triton._utils import find_paths_if, get_iterable_path
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import CUDABackend
    from triton.compiler import ASTSource

    from deltanet.ops.kernels import backward, chunk_output, chunk_state, wy

    jitted = {name: k for m in (wy, chunk_state, chunk_output, backward) for name, k in vars(m).items()
              if name.endswith("_kernel")}  # fmt: skip
    cuobjdump = Path(triton.__file__).parent / "backends/nvidia/bin/cuobjdump"
    print(f"triton {triton.__version__}, sm_90, {len(keys)} kernel specialisations", flush=True)
    bad = 0
    for name, spec, options in sorted(keys, key=str):
        sigvals = [kind for _, kind, _ in spec]
        constexprs = {path: get_iterable_path([value for *_, value in spec], path)
                      for path in find_paths_if(sigvals, lambda _, kind: kind == "constexpr")}  # fmt: skip
        attrvals = ["" if kind == "constexpr" else value for _, kind, value in spec]
        attrs = {path: CUDABackend.parse_attr(get_iterable_path(attrvals, path))
                 for path in find_paths_if(attrvals, lambda _, x: isinstance(x, str))}  # fmt: skip
        signature = {n: kind for n, kind, _ in spec}
        kernel = triton.compile(ASTSource(jitted[name], signature, constexprs, attrs), target=GPUTarget("cuda", 90, 32),
                                options=dict(options))  # fmt: skip
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(kernel.asm["cubin"])
            f.flush()
            usage = subprocess.run([str(cuobjdump), "--dump-resource-usage", f.name], capture_output=True,
                                   text=True).stdout  # fmt: skip
        regs, stack = re.search(r"REG:(\d+).*?STACK:(\d+)", usage).groups()
        bf16 = any(kind == "*bf16" for _, kind, _ in spec)
        over, spills = kernel.metadata.shared > SMEM_LIMIT, bf16 and stack != "0"
        bad += over or spills
        values = dict((n, v) for n, kind, v in spec if kind == "constexpr")
        print(f"{'OVER' if over else 'SPILL' if spills else 'ok'} {name} DK={values['DK']} C={values['C']} "
              f"{'bf16' if bf16 else 'fp32'} regs={regs} spill_stack={stack} smem={kernel.metadata.shared}",
              flush=True)  # fmt: skip
    print(f"{bad} specialisations over sm_90's shared memory ({SMEM_LIMIT} bytes) or spilling in bf16")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--warm", metavar="I/N", help="the I-th of N shares of the warm-up calls")
    p.add_argument("--parts", required=True, help="comma-separated parts whose calls to warm up (or compile)")
    p.add_argument("--compile-sm90", action="store_true", help="compile the parts' specialisations for sm_90, no GPU")
    p.add_argument("--config", type=Path, default=REPO / "config.yaml")
    args = p.parse_args(argv)
    if args.compile_sm90:
        calls = part_calls(args.config)
        return compile_sm90(specialisations(c for part in args.parts.split(",") for c in calls[part]))
    share, shares = (int(n) for n in args.warm.split("/"))
    calls = warm_calls(args.parts.split(","), part_calls(args.config))[share::shares]
    gpu = torch.cuda.is_available()
    expect("warm", [c.label for c in calls])
    for call in calls:
        started = time.perf_counter()
        if gpu:
            run_call(call, "cuda")
            torch.cuda.synchronize()
            emit(warm=call.label, warmup_s=round(time.perf_counter() - started, 2))
        else:  # no GPU: what would compile, recorded
            emit(warm=call.label, specialisations=len(specialisations([call])), compiled=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
