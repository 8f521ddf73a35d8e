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
(``rows.emit``); ``ratio`` is the model's figure over the baseline's in the same engine, ``replayed`` whether the
steps really ran from a CUDA graph (a failed capture runs eagerly and says so), a failed model's figure is NaN.
``--json`` is rewritten after each model with {model: {"solo", "fused", "captured", "job_engine", "ratio",
"replayed"}}: ``job_engine`` is the engine a job runs on this device (captured on CUDA, fused elsewhere) and
``ratio`` its ratio to the baseline, which ``protocol_cost.py`` reads.
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
from deltanet.io import write_text_atomic  # noqa: E402
from deltanet.training.capture import WARMUP_CALLS  # noqa: E402
from deltanet.training.device import DEVICE_CHOICES, training_device  # noqa: E402
from deltanet.training.loop import Group, GroupPlan, RunPlan  # noqa: E402
from deltanet.variants import variant_names  # noqa: E402
from deltanet.variants.catalog import BASELINE_VARIANTS  # noqa: E402

BASELINE = BASELINE_VARIANTS["delta"]
ENGINES = ("solo", "fused", "captured")
SEQ_LEN = 128  # the MAD baseline length of the recall tasks (the default --seq-len)


def job_group(cfg: dict, variant: str, members: int, seq: int, vocab: int, device: torch.device, capture: bool):
    """A job's group of ``members`` runs of ``variant`` (``deltanet/training/loop.py``'s ``Group``: the jobs' build,
    optimiser and steps), and its training step on fixed batches, a function of no arguments."""
    scale = cfg["scales"][cfg["scale"]]
    runs = [RunPlan(i, 1e-3, 0.0, i) for i in range(1, members + 1)]
    plan = GroupPlan(runs, members, "throughput", vocab, {**scale["model"], "variant": variant,
                     "kernels": cfg["kernels"]}, False, scale["optim"], device)  # fmt: skip
    group = Group(plan, runs, seq, capture)
    tokens = torch.randint(0, vocab, (members, scale["optim"]["batch_size"], seq + 1), device=device)
    x, y = tokens[..., :-1].contiguous(), tokens[..., 1:].contiguous()
    return group, lambda: group.step(x, y)


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


def measure_engines(cfg: dict, variant: str, engines: tuple, members: int, args, device: torch.device,
                    baseline: dict | None) -> dict:  # fmt: skip
    """{engine: run-tokens/s (NaN: failed), f"{engine}_detail": the row's other fields} for one model, each row
    printed as soon as it is measured, with its ratio to ``baseline``'s figures (None: this is the baseline). A
    captured figure whose steps were not replayed from a graph (capture failed) says so: ``replayed`` false."""
    figures: dict = {}
    for engine in engines:
        r = 1 if engine == "solo" else members
        warmup = args.warmup + (WARMUP_CALLS + 1 if engine == "captured" else 0)
        detail = {"members": r, "replayed": False}
        try:
            group, step = job_group(cfg, variant, r, args.seq_len, args.vocab_size, device, engine == "captured")
            tokens_per_step = r * cfg["scales"][cfg["scale"]]["optim"]["batch_size"] * args.seq_len
            tps, warm, measured = run_tokens_per_second(step, tokens_per_step, args.steps, warmup, device)
            detail |= {"replayed": group.step.captured and group.step.failure is None, "warmup_s": warm,
                       "measure_s": measured, "capture_failure": group.step.failure}  # fmt: skip
        except Exception as err:  # one broken model should not hide the others' numbers
            tps = math.nan
            detail["error"] = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
            print(f"{variant} {engine}: failed ({detail['error']})", file=sys.stderr)
        figures[engine], figures[f"{engine}_detail"] = tps, detail
        emit(row=f"{variant}/{engine}", model=variant, engine=engine, run_tokens_per_second=tps,
             ratio=tps / (baseline or figures)[engine], **detail)  # fmt: skip
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return figures


def job_figures(figures: dict, job_engine: str) -> dict:
    """The JSON ``protocol_cost.py`` reads: per model, each engine's figure, the job engine and its ratio to the
    baseline (NaN when either is missing), and whether the job engine's steps were replayed."""
    base = figures.get(BASELINE, {}).get(job_engine, math.nan)
    return {v: {**{e: f for e, f in row.items() if not e.endswith("_detail")}, "job_engine": job_engine,
                "ratio": row[job_engine] / base, "replayed": row[f"{job_engine}_detail"]["replayed"]}
            for v, row in figures.items()}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=os.path.join(REPO, "config.yaml"))
    p.add_argument("--scale", default="full")
    p.add_argument("--seq-len", type=int, default=SEQ_LEN, help="MAD baseline length of the recall tasks")
    p.add_argument("--vocab-size", type=int, default=16)
    p.add_argument("--members", type=int, help="members of the fused group (default: runs per setting)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--variants", help="comma-separated names (default: every registered variant)")
    p.add_argument("--engines", help="comma-separated subset of " + ", ".join(ENGINES) + " (default: each that "
                   "runs on this device; the last one named is the job engine the ratios are of)")
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
    runnable = ENGINES if device.type == "cuda" else ENGINES[:2]
    engines = tuple(e for e in args.engines.split(",") if e in runnable) if args.engines else runnable
    job_engine = runnable[-1] if runnable[-1] in engines else engines[-1]
    batch, seq = optim["batch_size"], args.seq_len
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"# training throughput, scale {args.scale}: {scale['model']}, batch {batch}, seq {seq}, vocab "
          f"{args.vocab_size}, fused groups of {members}, {args.steps} timed steps after {args.warmup} warm-up "
          f"(+{WARMUP_CALLS} before capture), {name}\n")  # fmt: skip
    expect("row", [f"{v}/{e}" for v in names for e in engines])
    figures: dict[str, dict] = {}
    for variant in names:
        figures[variant] = measure_engines(config | {"scale": args.scale}, variant, engines, members, args, device,
                                           figures.get(BASELINE))  # fmt: skip
        if args.json:  # rewritten after each model: a run stopped at its time limit keeps what it measured
            write_text_atomic(args.json, json.dumps(job_figures(figures, job_engine), indent=1))
    both = {"solo", "fused"} <= set(engines)
    print(f"| model | {' | '.join(f'{e} run-tokens/s' for e in engines)} |{' fused / solo |' * both} "
          f"{job_engine} vs {BASELINE} |\n|---|{'---:|' * (len(engines) + 1 + both)}")  # fmt: skip
    for variant, row in job_figures(figures, job_engine).items():
        cells = " | ".join(f"{row[e]:,.0f}" for e in engines)
        gain = f" {row['fused'] / row['solo']:.2f} |" if both else ""
        print(f"| {variant} | {cells} |{gain} {row['ratio']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
