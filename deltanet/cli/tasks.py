"""``deltanet tasks``: each MAD task with its display name, settings count and a short example row."""

from __future__ import annotations

import argparse

import numpy as np

from deltanet.tasks import GRIDS, TASK_IDS, get_task, task_settings
from deltanet.tasks.generator_kit import DATA_SEED, IGNORE, SIZE_FIELDS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deltanet tasks", description=__doc__)
    parser.add_argument("tasks", nargs="*", metavar="TASK", help=f"task ids (default: all of {', '.join(TASK_IDS)})")
    parser.add_argument("--grid", choices=GRIDS, default="mad", help="settings grid to count (default: mad)")
    parser.add_argument("--settings", action="store_true", help="also list every setting id and its fields")
    args = parser.parse_args(argv)
    try:
        tasks = [get_task(task_id) for task_id in args.tasks or TASK_IDS]
    except ValueError as err:
        parser.error(str(err))

    total = 0
    for task in tasks:
        settings = task_settings(task.id, args.grid)
        total += len(settings)
        backbone = "AutoEncoder" if task.autoencoder else "LanguageModel"
        print(f"{task.id} ({task.display_name}): {len(settings)} settings under the {args.grid} grid; {backbone}")
        print(f"  baseline: {_fields(settings[0].fields)}")
        print(f"  sweep:    {'; '.join(f'{k} {v}' for k, v in task.sweep.items())}")
        if args.settings:
            for setting in settings:
                print(f"    {setting.id:<28} {_fields(setting.fields)}")
        example = task_settings(task.id, "baseline", task.example)[0]
        knobs = {k: v for k, v in example.fields.items() if k not in SIZE_FIELDS}
        print(f"  example row ({', '.join(f'{k}={v}' for k, v in task.example.items())}; '.' = -100, not scored):")
        for label, is_training in (("train", True), ("test", False)):
            inputs, targets = task.generate(1, rng=np.random.default_rng(DATA_SEED), is_training=is_training,
                                            **knobs, **task.extra_rngs())
            print(f"    {label:<5} inputs  {_row(inputs[0])}")
            print(f"    {label:<5} targets {_row(targets[0])}")
        print()
    print(f"total: {total} settings")
    return 0


def _fields(fields: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in fields.items())


def _row(tokens: np.ndarray) -> str:
    return " ".join(f"{'.' if t == IGNORE else t:>3}" for t in tokens)
