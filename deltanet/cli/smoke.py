"""``deltanet smoke``: the smoke check (:mod:`deltanet.training.smoke`) of a scale, written to a folder.

    deltanet smoke --out-dir results/smoke [--config config.yaml] [--scale smoke] [--device auto|cpu|cuda]
        [--batch-size N] [--precision auto|bf16|fp32] [--variants a,b] [--tasks x,y]

One row per (model, setting) in ``<out-dir>/smoke.parquet`` and a summary in ``smoke.md``. Exit status: 0 every
run finite, 1 any run failed or was not finite, 2 a bad argument (one ``deltanet smoke: error:`` line).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deltanet.config import allowed_values
from deltanet.training.device import DEVICE_CHOICES, training_device


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="deltanet smoke", description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", required=True, type=Path, help="where smoke.parquet and smoke.md go")
    p.add_argument("--config", type=Path, default=Path("config.yaml"))
    p.add_argument("--scale", default="smoke", help="scale under `scales` (default: smoke)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="default: CUDA if available")
    p.add_argument("--batch-size", type=int,
                   help="override optim.batch_size and eval_batch_size (smaller batches on a CPU)")
    p.add_argument("--precision", choices=allowed_values("optim", "precision"), help="override optim.precision")
    p.add_argument("--variants", help="comma-separated subset (default: every registered variant)")
    p.add_argument("--tasks", help="comma-separated subset (default: every task)")
    p.add_argument("--cache-dir", type=Path, help="dataset cache")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from deltanet.config import ConfigError, load_config
    from deltanet.names import unknown_name
    from deltanet.tasks import TASK_IDS, get_task
    from deltanet.variants import variant_names
    from deltanet.variants.catalog import check_known

    try:
        config = load_config(args.config)
    except ConfigError as err:
        print(f"deltanet smoke: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    if args.scale not in config["scales"]:
        print(f"deltanet smoke: error: {unknown_name('scale', args.scale, list(config['scales']))}", file=sys.stderr)
        return 2
    chosen = {}
    for key, value, known, check in (("variants", args.variants, variant_names(), check_known),
                                     ("tasks", args.tasks, list(TASK_IDS), get_task)):  # fmt: skip
        names = known if value is None else value.split(",")
        try:
            for name in names:
                check(name)
        except ValueError as err:
            print(f"deltanet smoke: error: --{key}: {err}", file=sys.stderr)
            return 2
        chosen[key] = names
    optim = config["scales"][args.scale]["optim"]
    if args.batch_size:
        optim["batch_size"] = optim["eval_batch_size"] = args.batch_size
    if args.precision:
        optim["precision"] = args.precision

    import pandas as pd

    from deltanet.io import atomic_path, write_text_atomic
    from deltanet.training.provenance import device_name
    from deltanet.training.smoke import smoke, summary_markdown

    try:
        device = training_device(args.device)
    except ValueError as err:
        print(f"deltanet smoke: error: --device: {err}", file=sys.stderr)
        return 2
    rows = smoke(config, args.scale, device, chosen["variants"], chosen["tasks"], args.cache_dir)
    df = pd.DataFrame(rows)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out_dir / "smoke.parquet") as tmp:
        df.to_parquet(tmp, index=False)
    write_text_atomic(args.out_dir / "smoke.md", summary_markdown(df, args.scale, device_name(device)))
    failed = int((~df["ok"]).sum())
    print(f"deltanet smoke: {len(df) - failed}/{len(df)} runs ok; table in {args.out_dir / 'smoke.md'}")
    return 1 if failed else 0
