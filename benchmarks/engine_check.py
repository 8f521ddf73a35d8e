"""The jobs' engine on the path the full scale runs: captured vs eager training losses, with an eager-vs-eager control
for nondeterminism, and the dtypes that reach the mixer's op, per model.

    PYTHONPATH=. python benchmarks/engine_check.py [--scale full] [--steps 8] [--members N] [--seq-len 128]
        [--device auto|cpu|cuda] [--variants a,b,...]

Per model (default: the baseline on the kernel path, a loop variant, the reference Gated DeltaNet), three groups
are built alike through the engine (``train_throughput.job_group``: the jobs' ``Group``, same seeds, same batch)
and trained ``--steps`` steps: eager A, eager B and captured (its first steps are the capture warm-up, real steps
too). One row per model: the largest relative difference of a member's loss, captured vs eager A and eager B vs
eager A (the control); the same for the parameters after the last step (‖Δθ‖/‖θ‖, largest over the parameters:
what the gradients and optimiser did); the captured group's evaluation step (captured, then replayed, as the jobs
evaluate) vs the eager forward on its parameters; ``replayed`` / ``eval_replayed`` (the steps really ran from a
graph), ``agrees`` (losses and parameters within max(control, 1e-4) of eager, evaluation within 1e-4), and the
dtypes that reached the op on an eager step
(``deltanet.ops.dispatch.record_input_dtypes``: q, k, v, g, β and whether the kernels or the naive loop ran).
Without CUDA nothing is captured: the captured group runs eagerly and its row says ``replayed: false``.
"""

from __future__ import annotations

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402
from rows import emit, expect  # noqa: E402  (benchmarks/ is this script's folder)
from train_throughput import job_group  # noqa: E402

from deltanet.config import load_config  # noqa: E402
from deltanet.ops.dispatch import record_input_dtypes  # noqa: E402
from deltanet.training.capture import WARMUP_CALLS  # noqa: E402
from deltanet.training.device import DEVICE_CHOICES, training_device  # noqa: E402
from deltanet.training.loop import eval_logits  # noqa: E402
from deltanet.variants.catalog import BASELINE_VARIANTS  # noqa: E402

MODELS = (BASELINE_VARIANTS["delta"], "delta_net_4layer_momentum_state_update_in_for_loop", BASELINE_VARIANTS["gated"])
MEMBERS = 2  # the default --members: a fused group, as the jobs train
FLOOR = 1e-4  # the fused-vs-solo tolerance of tests/test_fused.py: what "equal" means when eager is deterministic


def trained(cfg: dict, variant: str, members: int, args, device: torch.device, capture: bool, dtypes=None):
    """A new group trained ``--steps`` steps: (its per-step member losses ``[steps, R]``, whether its steps were
    replayed from a graph, the group)."""
    group, step = job_group(cfg, variant, members, args.seq_len, args.vocab_size, device, capture)
    out = []
    for i in range(args.steps):
        if i == 0 and dtypes is not None:
            with record_input_dtypes() as seen:
                out.append(step().clone())
            dtypes.extend(d for d in seen if d not in dtypes)
        else:
            out.append(step().clone())
    return torch.stack(out).double().cpu(), group.step.captured and group.step.failure is None, group


def evaluation(group, args, device: torch.device) -> tuple[float, bool]:
    """The group's evaluation step as the jobs run it (captured after its warm-up, replayed) against the eager
    forward on the same parameters: (relative difference of the logits, whether the step was replayed)."""
    x = torch.randint(0, args.vocab_size, (group.plan.optim.get("eval_batch_size", group.plan.optim["batch_size"]),
                                           args.seq_len), generator=torch.Generator().manual_seed(0)).to(device)
    eager = eval_logits(group.fused, x, group.amp).double()
    for _ in range(WARMUP_CALLS + 2):  # warm-up calls, the recording call, one replay
        out = group.eval_step(x).double()
    return rel_norm(out, eager), group.eval_step.captured and group.eval_step.failure is None


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs().clamp_min(1e-12)).max())


def rel_norm(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ (0 for equal tensors): a whole tensor's error, blind to single near-zero entries."""
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def params_diff(a, b) -> float:
    """The largest :func:`rel_norm` over the parameters of two groups' fused models (same names, same members)."""
    return max(rel_norm(a.fused.params[n].detach().double(), b.fused.params[n].detach().double())
               for n in b.fused.params)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=os.path.join(REPO, "config.yaml"))
    p.add_argument("--scale", default="full")
    p.add_argument("--steps", type=int, default=8, help="steps per group (the captured one's first 3 are warm-up)")
    p.add_argument("--members", type=int, default=MEMBERS)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--vocab-size", type=int, default=16)
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--variants", help="comma-separated names (default: " + ", ".join(MODELS) + ")")
    args = p.parse_args(argv)
    cfg = load_config(args.config) | {"scale": args.scale}
    device = training_device(args.device)
    names = args.variants.split(",") if args.variants else list(MODELS)
    expect("model", names)
    for variant in names:
        dtypes: list[dict] = []
        try:
            eager_a, _, group_a = trained(cfg, variant, args.members, args, device, False, dtypes)
            eager_b, _, group_b = trained(cfg, variant, args.members, args, device, False)
            captured, replayed, group_c = trained(cfg, variant, args.members, args, device, device.type == "cuda")
            eval_diff, eval_replayed = evaluation(group_c, args, device)
        except Exception as err:  # one broken model should not hide the others' rows
            emit(model=variant, error=f"{type(err).__name__}: {' '.join(str(err).split())[:300]}")
            continue
        control, diff = max_rel(eager_b, eager_a), max_rel(captured, eager_a)
        params_control, params = params_diff(group_b, group_a), params_diff(group_c, group_a)
        emit(model=variant, steps=args.steps, members=args.members, replayed=replayed,
             captured_vs_eager=diff, eager_vs_eager=control, params_captured_vs_eager=params,
             params_eager_vs_eager=params_control, eval_replayed=eval_replayed, eval_captured_vs_eager=eval_diff,
             agrees=diff <= max(control, FLOOR) and params <= max(params_control, FLOOR) and eval_diff <= FLOOR,
             op_inputs=dtypes)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
