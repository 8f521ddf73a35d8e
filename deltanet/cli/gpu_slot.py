"""``deltanet gpu-slot``: run one workflow job in a GPU slot of this machine (:mod:`deltanet.gpu_slots`).

    deltanet gpu-slot --gpus N -- COMMAND [ARG ...]

With N > 0 and the workflow's slot plan in the environment, the job takes a free slot and sees only its GPU;
otherwise (a CPU job, a cluster job) COMMAND runs as it is. COMMAND replaces this process, so its exit status is
the job's.
"""

from __future__ import annotations

import argparse

from deltanet.gpu_slots import run_in_slot


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="deltanet gpu-slot", description=__doc__.splitlines()[0])
    p.add_argument("--gpus", type=int, required=True, help="GPUs the job needs (the rule's resources.gpu)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the job's command")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("no command given after --")
    run_in_slot(command, args.gpus)
