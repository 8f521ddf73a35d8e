"""``deltanet gpu-slot``: run one workflow job in a GPU slot of this machine (:mod:`deltanet.gpu_slots`).

    deltanet gpu-slot --gpus N [--plan JSON] -- COMMAND [ARG ...]

With N > 0 and the workflow's slot plan, the job takes a free slot and sees only its GPU; otherwise (a CPU job, a
cluster job: no plan) COMMAND runs as it is. COMMAND replaces this process, so its exit status is the job's; a slot
that cannot be taken is one ``deltanet gpu-slot: error: ...`` line and exit 1.
"""

from __future__ import annotations

import argparse
import sys

from deltanet.gpu_slots import SlotError, run_in_slot


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="deltanet gpu-slot", description=__doc__.splitlines()[0])
    p.add_argument("--gpus", type=int, required=True, help="GPUs the job needs (the rule's resources.gpu)")
    p.add_argument("--plan", help="the workflow's slot plan (JSON); absent: no slot (a cluster job)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the job's command")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("no command given after --")
    try:
        run_in_slot(command, args.gpus, args.plan)
    except SlotError as err:
        print(f"deltanet gpu-slot: error: {err}", file=sys.stderr)
        return 1
    return 0
