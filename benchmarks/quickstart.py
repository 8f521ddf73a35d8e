"""The quickstart's cost against its floor (issue #35): a tiny train job ÷ ``python -c "import torch"``, op launches
per tiny step, and optionally the tiny pipeline ÷ its floor. Not a timed test: the ratios are measured in one run.

    python benchmarks/quickstart.py [--config config.yaml] [--repeats 5] [--variant delta_net_4layer]
        [--task context_recall] [--pipeline-seconds S] [--cores N]

- ``job ÷ import``: medians of ``--repeats`` alternating runs of ``python -c "import torch"`` and the tiny job as
  the workflow starts it (``workflow/rules/train.smk``: ``--threads 1``), on a fresh output each time; wall clock
  and CPU time. Issue #35 asks for at most 2.5.
- ``launches/step``: kernels (aten ops other than views) and all aten ops dispatched by one training step of the
  tiny job's group (counted with a ``TorchDispatchMode``, after one warm-up step): the same on every machine.
- ``pipeline ÷ floor`` (with ``--pipeline-seconds``, the wall time of ``snakemake --cores all`` from a clean
  ``results/``): floor = train jobs × import time (wall) ÷ cores. The verify, identities, aggregate and report jobs
  are not in the floor, so the ratio is an upper bound of the issue's.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from train_throughput import job_group  # noqa: E402  (benchmarks/ is this script's folder)

from deltanet.config import load_config  # noqa: E402
from deltanet.tasks import TASK_IDS, task_settings  # noqa: E402
from deltanet.variants import variant_names  # noqa: E402

SCALE = "tiny"


class CountOps(TorchDispatchMode):
    """Counts every aten op dispatched while active (forward, backward and optimiser alike); ``kernels`` leaves out
    the views (``is_view`` in the op's schema, and ``_unsafe_view``), which move no data and launch nothing."""

    def __init__(self):
        super().__init__()
        self.ops, self.kernels = Counter(), Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        self.ops[name] += 1
        if not (func.is_view or name == "aten._unsafe_view"):
            self.kernels[name] += 1
        return func(*args, **(kwargs or {}))


def seconds(cmd: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of ``cmd``; on a shared machine CPU time is the steadier of the two."""
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def launches_per_step(cfg: dict, variant: str, task: str) -> CountOps:
    scale = cfg["scales"][SCALE]
    (setting,) = task_settings(task, scale["grid"], scale["task_overrides"].get(task, {}))
    members = len(scale["optim"]["lrs"]) * len(scale["optim"]["weight_decays"]) * len(cfg["seeds"])
    cfg = {**cfg, "scale": SCALE}
    _, step = job_group(cfg, variant, members, int(setting.fields["seq_len"]), int(setting.fields["vocab_size"]),
                        torch.device("cpu"), capture=False)  # fmt: skip
    step()
    with CountOps() as counter:
        step()
    return counter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=os.path.join(REPO, "config.yaml"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variant", default="delta_net_4layer")
    parser.add_argument("--task", default="context_recall")
    parser.add_argument("--pipeline-seconds", type=float, help="wall time of the tiny `snakemake --cores all`")
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    args = parser.parse_args(argv)
    cfg = load_config(args.config)

    counted = launches_per_step(cfg, args.variant, args.task)
    print(f"launches/step: {sum(counted.kernels.values())} kernels, {sum(counted.ops.values())} aten ops with the "
          f"views ({SCALE}, {args.variant} × {args.task}; most: "
          f"{', '.join(f'{name} {n}' for name, n in counted.kernels.most_common(5))})", flush=True)  # fmt: skip

    imports, jobs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            imports.append(seconds([sys.executable, "-c", "import torch"]))
            jobs.append(seconds([sys.executable, "-m", "deltanet", "train", "--variant", args.variant, "--task",
                                 args.task, "--config", args.config, "--scale", SCALE, "--device", "cpu",
                                 "--threads", "1", "--out", os.path.join(tmp, f"job{i}.parquet")]))  # fmt: skip
            print(f"  run {i + 1}: import torch {imports[-1][0]:.2f} s ({imports[-1][1]:.2f} s CPU), tiny job "
                  f"{jobs[-1][0]:.2f} s ({jobs[-1][1]:.2f} s CPU)", flush=True)  # fmt: skip
    for k, kind in enumerate(("wall", "CPU")):
        floor, job = statistics.median(t[k] for t in imports), statistics.median(t[k] for t in jobs)
        print(f"tiny job ÷ import torch, {kind}: {job / floor:.2f} (medians of {args.repeats}: {job:.2f} s ÷ "
              f"{floor:.2f} s; issue #35 asks ≤ 2.5)")
    floor = statistics.median(t[0] for t in imports)
    if args.pipeline_seconds is not None:
        train_jobs = len(variant_names()) * len(TASK_IDS)  # the default config's `variants: all`, `tasks: all`
        pipeline_floor = train_jobs * floor / args.cores
        print(f"pipeline ÷ floor: {args.pipeline_seconds / pipeline_floor:.2f} ({args.pipeline_seconds:.0f} s ÷ "
              f"{train_jobs} jobs × {floor:.2f} s ÷ {args.cores} cores = {pipeline_floor:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
