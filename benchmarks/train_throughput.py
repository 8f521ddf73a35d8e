"""Training throughput per model with the jobs' engine: solo, fused and fused + captured, in run-tokens per second.

    PYTHONPATH=. python benchmarks/train_throughput.py [--config config.yaml] [--scale full] [--seq-len 128]
        [--vocab-size 16] [--members N] [--steps 5] [--warmup 2] [--device auto|cpu|cuda] [--variants a,b,...]
        [--json PATH]

Model shapes, kernels, batch size and precision come from the config and scale, as a job gets them (default
``full``: d=128, 4 heads × 32, the reference profile's chunk 32 and fla-sized Gated DeltaNet, batch 128, Triton and
bf16 autocast on CUDA); sequences are uniform random tokens. One step = the job's ``train_step``: forward of every
member, cross-entropy, backward, the stacked AdamW step. Engines:

- ``solo``: a group of one member (what a job with ``optim.fuse_runs: false`` runs);
- ``fused``: a group of ``--members`` (default: the runs a setting of the scale has, |lrs|·|weight decays|·|seeds|),
  each on its own batch;
- ``captured``: the fused group with its step replayed from a CUDA graph (CUDA only; warm-up calls included).

run-tokens/s = members · batch · seq · steps / seconds. Each (model, engine) row is printed as soon as it is measured
(``rows.emit``); ``ratio`` is the model's figure over the baseline's in the same engine. ``--json`` writes
{model: {"solo", "fused", "captured", "job_engine", "ratio"}}: ``job_engine`` is the engine a job runs on this device
(captured on CUDA, fused elsewhere) and ``ratio`` its ratio to the baseline, which ``protocol_cost.py`` reads.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402
from rows import emit, expect  # noqa: E402  (benchmarks/ is this script's folder)

from deltanet.config import load_config  # noqa: E402
from deltanet.model import ModelConfig, build_model  # noqa: E402
from deltanet.training.capture import WARMUP_CALLS, CapturedStep  # noqa: E402
from deltanet.training.device import DEVICE_CHOICES, training_device  # noqa: E402
from deltanet.training.fused import FusedModel  # noqa: E402
from deltanet.training.loop import autocast_dtype, train_step  # noqa: E402
from deltanet.training.optim import StackedAdamW  # noqa: E402
from deltanet.variants import variant_names  # noqa: E402

BASELINE = "delta_net_4layer"
ENGINES = ("solo", "fused", "captured")


def group_step(cfg: ModelConfig, members: int, batch: int, seq: int, device: torch.device, amp, capture: bool):
    """The job's step for a group of ``members`` built from ``cfg``: a function of no arguments, on fixed batches."""
    models = []
    for seed in range(members):
        torch.manual_seed(seed)
        models.append(build_model(cfg).to(device))
    fused = FusedModel.stack(models)
    optimizer = StackedAdamW(fused.parameters(), lr=[1e-3] * members, weight_decay=[0.0] * members)
    tokens = torch.randint(0, cfg.vocab_size, (members, batch, seq + 1), device=device)
    x, y = tokens[..., :-1].contiguous(), tokens[..., 1:].contiguous()
    step = CapturedStep(lambda a, b: train_step(fused, optimizer, a, b, amp), capture, {tuple(x.shape)}, "step")
    return lambda: step(x, y)


def run_tokens_per_second(step, tokens_per_step: int, steps: int, warmup: int, device: torch.device):
    """(run-tokens/s over ``steps`` timed steps, seconds of warm-up, seconds measured)."""
    started = time.perf_counter()
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    warm = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    measured = time.perf_counter() - started
    return tokens_per_step * steps / measured, warm, measured


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=os.path.join(REPO, "config.yaml"))
    p.add_argument("--scale", default="full")
    p.add_argument("--seq-len", type=int, default=128, help="MAD baseline length of the recall tasks")
    p.add_argument("--vocab-size", type=int, default=16)
    p.add_argument("--members", type=int, help="members of the fused group (default: runs per setting)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--variants", help="comma-separated names (default: every registered variant)")
    p.add_argument("--json", help="also write the figures as JSON to this path")
    args = p.parse_args(argv)

    config = load_config(args.config)
    scale = config["scales"][args.scale]
    optim = scale["optim"]
    members = args.members or len(optim["lrs"]) * len(optim["weight_decays"]) * len(config["seeds"])
    device = training_device(args.device)
    names = args.variants.split(",") if args.variants else variant_names()
    if BASELINE not in names:
        names.insert(0, BASELINE)
    engines = ENGINES if device.type == "cuda" else ENGINES[:2]
    job_engine = engines[-1]
    batch, seq, amp = optim["batch_size"], args.seq_len, autocast_dtype(optim.get("precision", "auto"), device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"# training throughput, scale {args.scale}: {scale['model']}, batch {batch}, seq {seq}, vocab "
          f"{args.vocab_size}, fused groups of {members}, {args.steps} timed steps after {args.warmup} warm-up "
          f"(+{WARMUP_CALLS} before capture), {name}\n")  # fmt: skip
    expect("row", [f"{v}/{e}" for v in names for e in engines])
    figures: dict[str, dict[str, float]] = {}
    for variant in names:
        cfg = ModelConfig(vocab_size=args.vocab_size, variant=variant, **scale["model"], kernels=config["kernels"],
                          max_length=seq)  # fmt: skip
        figures[variant] = {}
        for engine in engines:
            r = 1 if engine == "solo" else members
            warmup = args.warmup + (WARMUP_CALLS + 1 if engine == "captured" else 0)
            try:
                step = group_step(cfg, r, batch, seq, device, amp, capture=engine == "captured")
                tps, warm, measured = run_tokens_per_second(step, r * batch * seq, args.steps, warmup, device)
            except Exception as err:  # one broken model should not hide the others' numbers
                tps, warm, measured = math.nan, math.nan, math.nan
                print(f"{variant} {engine}: failed ({type(err).__name__}: {err})", file=sys.stderr)
            figures[variant][engine] = tps
            base = figures[BASELINE][engine]
            emit(row=f"{variant}/{engine}", model=variant, engine=engine, members=r, run_tokens_per_second=tps,
                 ratio=tps / base, warmup_s=warm, measure_s=measured)  # fmt: skip
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print(f"| model | {' | '.join(f'{e} run-tokens/s' for e in engines)} | fused / solo | "
          f"{job_engine} vs {BASELINE} |\n|---|{'---:|' * (len(engines) + 2)}")  # fmt: skip
    for variant, row in figures.items():
        cells = " | ".join(f"{row[e]:,.0f}" for e in engines)
        print(f"| {variant} | {cells} | {row['fused'] / row['solo']:.2f} | "
              f"{row[job_engine] / figures[BASELINE][job_engine]:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({v: {**row, "job_engine": job_engine, "ratio": row[job_engine] / figures[BASELINE][job_engine]}
                       for v, row in figures.items()}, f, indent=1)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
