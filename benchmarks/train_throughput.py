"""Training throughput per variant at full-scale shapes: tokens/s of one AdamW step, and the ratio to the baseline.

    PYTHONPATH=. python benchmarks/train_throughput.py [--config config.yaml] [--scale full] [--seq-len 128]
        [--vocab-size 16] [--steps 5] [--warmup 2] [--device auto|cpu|cuda] [--variants a,b,...] [--json PATH]

Model shapes, kernels and batch size come from the config and scale, as a job gets them (default ``full``: d=128,
4 heads × 32, the reference profile's chunk 32 and fla-sized Gated DeltaNet, batch 128, Triton on CUDA);
sequences are uniform random tokens (throughput does not depend on the data). One step = forward, next-token
cross-entropy, backward, AdamW step, under the precision a job uses (``optim.precision``: bf16 autocast on CUDA).
The table is printed as markdown; ``--json`` also writes {variant: {"tokens_per_second", "ratio"}}.
On 2 CPU cores one step at these shapes takes about a second, so use ``--steps 2 --warmup 1`` there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

from deltanet.config import load_config  # noqa: E402
from deltanet.model import ModelConfig, build_model  # noqa: E402
from deltanet.training.loop import autocast_dtype, train_step  # noqa: E402
from deltanet.variants import variant_names  # noqa: E402

BASELINE = "delta_net_4layer"


def step_tokens_per_second(variant: str, model_kwargs: dict, batch: int, seq: int, vocab: int, steps: int,
                           warmup: int, device: torch.device, precision: str = "auto") -> float:  # fmt: skip
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=vocab, variant=variant, **model_kwargs, max_length=seq)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.randint(0, vocab, (batch, seq + 1), device=device)
    x, y = tokens[:, :-1], tokens[:, 1:]
    amp = autocast_dtype(precision, device)

    def step():
        train_step(model, opt, x, y, amp)

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * seq * steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=os.path.join(REPO, "config.yaml"))
    p.add_argument("--scale", default="full")
    p.add_argument("--seq-len", type=int, default=128, help="MAD baseline length of the recall tasks")
    p.add_argument("--vocab-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--variants", help="comma-separated names (default: every registered variant)")
    p.add_argument("--json", help="also write the figures as JSON to this path")
    args = p.parse_args(argv)

    config = load_config(args.config)
    scale = config["scales"][args.scale]
    model_kwargs = {**scale["model"], "kernels": config["kernels"]}  # as deltanet train builds it
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")  # fmt: skip
    torch.set_float32_matmul_precision("high")
    names = args.variants.split(",") if args.variants else variant_names()
    if BASELINE not in names:
        names.insert(0, BASELINE)
    batch = scale["optim"]["batch_size"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"# training step throughput, scale {args.scale}: {scale['model']}, batch {batch}, seq {args.seq_len}, "
          f"vocab {args.vocab_size}, {args.steps} timed steps after {args.warmup} warm-up, {name}\n")  # fmt: skip
    rows = {}
    for variant in names:
        try:
            rows[variant] = step_tokens_per_second(variant, model_kwargs, batch, args.seq_len, args.vocab_size,
                                                   args.steps, args.warmup, device,
                                                   scale["optim"].get("precision", "auto"))  # fmt: skip
        except Exception as err:  # one broken variant should not hide the others' numbers
            rows[variant] = float("nan")
            print(f"{variant}: failed ({type(err).__name__}: {err})", file=sys.stderr)
        print(f"  {variant}: {rows[variant]:,.0f} tokens/s", file=sys.stderr, flush=True)
    base = rows[BASELINE]
    print(f"| variant | tokens/s | ratio to {BASELINE} |\n|---|---:|---:|")
    for variant, tps in rows.items():
        print(f"| {variant} | {tps:,.0f} | {tps / base:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({v: {"tokens_per_second": t, "ratio": t / base} for v, t in rows.items()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
