"""``deltanet`` command line: one sub-command per stage, each implemented by a module's ``main(argv)``."""

from __future__ import annotations

import importlib
import sys

# sub-command -> (module, function, one-line help)
COMMANDS = {
    "variants": ("deltanet.variants.cli", "list_main", "list the registered variants"),
    "new-variant": ("deltanet.variants.cli", "new_main", "write a new variant module from the baseline template"),
    "tasks": ("deltanet.tasks.cli", "main", "list the MAD tasks, their settings and an example row"),
    "train": ("deltanet.train", "main", "train every run of one variant x task into a parquet file"),
    "smoke": ("deltanet.training.smoke", "main", "preflight: every setting of a scale at its real shapes, one short run"),
    "verify-kernels": ("deltanet.verify_kernels", "main", "check the Triton kernels against the naive ops"),
    "aggregate": ("deltanet.aggregate", "main", "aggregate run parquet files into the accuracies table"),
    "report": ("deltanet.report", "main", "render the analysis report"),
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
    return getattr(importlib.import_module(module), func)(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
