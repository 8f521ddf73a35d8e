"""``deltanet`` command line: one sub-command per stage, each implemented by a module's ``main(argv)``.

The commands live in this package, one module per command group, above every layer they use: they parse the
arguments, call the library, print and choose the exit code. ``aggregate`` and ``report`` still keep theirs beside
their code.

A command that fails on an unexpected exception prints the traceback and then one last line naming the cause
(``deltanet <command>: error: <type>: <message>``): under Snakemake that line is what the console shows of the job.
"""

from __future__ import annotations

import importlib
import sys
import traceback

# sub-command -> (module, function, one-line help)
COMMANDS = {
    "variants": ("deltanet.cli.variants", "list_main", "list the registered variants"),
    "new-variant": ("deltanet.cli.variants", "new_main", "write a new variant module from the baseline template"),
    "tasks": ("deltanet.cli.tasks", "main", "list the MAD tasks, their settings and an example row"),
    "train": ("deltanet.cli.train", "main", "train every run of one variant x task into a parquet file"),
    "smoke": ("deltanet.cli.smoke", "main", "preflight: every setting of a scale at its real shapes, briefly"),
    "verify-kernels": ("deltanet.cli.verify_kernels", "main", "check the Triton kernels against the naive ops"),
    "aggregate": ("deltanet.aggregate", "main", "aggregate run parquet files into the accuracies table"),
    "report": ("deltanet.report", "main", "render the analysis report"),
    "gpu-slot": ("deltanet.cli.gpu_slot", "main", "run a workflow job in a GPU slot of this machine"),
}


def usage() -> str:
    lines = ["usage: deltanet <command> [options]", "", "commands:"]
    lines += [f"  {name:<15} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"deltanet: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[command]
    try:
        return getattr(importlib.import_module(module), func)(rest) or 0
    except Exception as err:
        traceback.print_exc()
        print(f"deltanet {command}: error: {type(err).__name__}: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
