"""Shared state for every stage: config checks, the scale, the selections, and the source files each job reads.

Snakemake does not track Python modules a command imports, so every rule lists the package files it really
depends on as inputs (functions below). They exclude the files of other variants and other tasks, so editing one
variant reruns only its jobs, and they list only files that exist (a module that lands later joins the inputs).
"""

import hashlib
import json
import re
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.settings.types import DeploymentMethod

from deltanet.config import (
    ConfigError,
    resolve_profiles,
    resolve_scale,
    selected,
    validate_config,
)
from deltanet.io import write_text_atomic
from deltanet.tasks import TASK_IDS, task_settings
from deltanet.variants import get_variant, variant_names

PACKAGE = Path("deltanet")
# The effective config (config.yaml merged with --configfile/--config), as the `deltanet` commands read it.
EFFECTIVE_CONFIG = "results/effective-config.yaml"


def check_config(config):
    """The CLI's checks (schema, then registered names), raised as a WorkflowError before any job is built; then
    each scale's model resolved against its fidelity profile (so a profile edit reruns the jobs it changes).
    """
    try:
        validate_config(config, source="config")
    except ConfigError as err:
        raise WorkflowError(str(err)) from None
    resolve_profiles(config)


def resolve_and_announce_scale(config):
    """The scale to run (``deltanet.config.resolve_scale``), printed where nobody can miss it."""
    scale = resolve_scale(config)
    if config["scale"] != "auto":
        why = "set in the config"
    elif scale == "full":
        why = "auto: an NVIDIA GPU is visible"
    else:
        why = "auto: no NVIDIA GPU visible"
    logger.warning(
        f"deltanet-repro: scale '{scale}' ({why}); outputs go to results/{scale}/"
    )
    return scale


def write_effective_config(config):
    """Write the merged config for the jobs (only when it changed; it is no input, params track what matters)."""
    text = yaml.safe_dump(dict(config), sort_keys=False)
    path = Path(EFFECTIVE_CONFIG)
    if not path.is_file() or path.read_text() != text:
        write_text_atomic(path, text)


def unregistered_run_pattern():
    """Regex for `<variant>/<task>` run paths whose variant or task is not registered."""
    known = (
        "|".join(map(re.escape, variant_names()))
        + ")/(?:"
        + "|".join(map(re.escape, TASK_IDS))
    )
    # Snakemake embeds this in `runs/(?P<run>...)\.parquet$`, so the look-ahead must reach the suffix.
    return rf"(?!(?:{known})\.parquet$)[^/]+/[^/]+"


def unregistered_run(wildcards):
    """Input function of the catch-all rule: fail the DAG build naming the known variants or tasks."""
    variant, task = wildcards.run.split("/")
    where = f"results/{wildcards.scale}/runs/{wildcards.run}.parquet"
    if variant not in variant_names():
        try:
            get_variant(
                variant
            )  # the registry's message: closest match and every known name
        except ValueError as err:
            raise WorkflowError(f"{where}: {err}") from None
    raise WorkflowError(
        f"{where}: unknown task {task!r}; known tasks: {', '.join(TASK_IDS)}"
    )


def canonical(value):
    """A param value whose text does not depend on dict order (Snakemake compares params by repr)."""
    return json.dumps(value, sort_keys=True)


def scale_section(wildcards):
    return config["scales"][wildcards.scale]


def apptainer_on():
    return DeploymentMethod.APPTAINER in workflow.deployment_settings.deployment_method


def existing(paths):
    return sorted({str(p) for p in paths if Path(p).is_file()})


def python_files(folder):
    return [p for p in (PACKAGE / folder).rglob("*.py") if "__pycache__" not in p.parts]


def kernel_sources():
    """What verify_kernels runs: the ops (naive and chunk kernels, the test harness) and the command itself."""
    return existing(
        python_files("ops") + [PACKAGE / "io.py", PACKAGE / "verify_kernels.py"]
    )


def train_core_sources():
    """Files every train job runs, whatever its variant and task.

    The ops, model, training loop, run table, config, the variant registry and its shared helpers (``_*.py``), and the
    task registry plus shared task code (every module in deltanet/tasks/ that is not a task; ``cli.py`` listing
    code excluded, it never runs in a job).
    """
    shared_tasks = [
        p
        for p in python_files("tasks")
        if p.stem not in TASK_IDS and p.name != "cli.py"
    ]
    files = python_files("ops") + python_files("training") + shared_tasks
    files += [
        PACKAGE / "variants" / "__init__.py",
        *(PACKAGE / "variants").glob("_*.py"),
    ]
    files += [
        PACKAGE / f"{name}.py"
        for name in ("model", "train", "metrics", "runs", "io", "config")
    ]
    return existing(files)


def task_source(wildcards):
    """The task's own generator module (empty until it exists)."""
    return existing([PACKAGE / "tasks" / f"{wildcards.task}.py"])


def train_task_settings(wildcards):
    """The task's resolved settings at this scale (grid + this task's overrides), nothing of other tasks."""
    section = scale_section(wildcards)
    overrides = section["task_overrides"].get(wildcards.task)
    settings = task_settings(wildcards.task, section["grid"], overrides)
    return canonical([{"id": s.id, "fields": s.fields} for s in settings])


def package_sources(*names):
    """Modules or packages under deltanet/ (``report`` = report.py or every file of report/), plus bundled data."""
    files = []
    for name in names:
        folder = PACKAGE / name
        if folder.is_dir():
            files += [
                p
                for p in folder.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts
            ]
        files.append(PACKAGE / f"{name}.py")
    return existing(files)


def data_files():
    return existing((PACKAGE / "data").glob("*"))


def device(wildcards):
    """cuda where the scale asks for a GPU, cpu otherwise."""
    return "cuda" if scale_section(wildcards)["resources"]["gpu"] > 0 else "cpu"


def quick_on_cpu(wildcards):
    """On a CPU the Triton kernels only run in the interpreter (training uses the naive ops): the short grid."""
    return "--quick" if device(wildcards) == "cpu" else ""


def gpus(wildcards):
    return scale_section(wildcards)["resources"]["gpu"]


def mem_mb(wildcards):
    return scale_section(wildcards)["resources"]["mem_mb"]


def runtime(wildcards):
    return scale_section(wildcards)["resources"]["runtime_min"]


def runs_dir(wildcards):
    return f"results/{wildcards.scale}/runs"


def out_dir(wildcards):
    return f"results/{wildcards.scale}"


def run_files(wildcards):
    return expand(
        "results/{scale}/runs/{variant}/{task}.parquet",
        scale=wildcards.scale,
        variant=VARIANTS,
        task=TASKS,
    )


# The container image (container.smk). `config["container"]["image"]` is `build` or a prebuilt image.
IMAGE_LOCK = "requirements/cuda.txt"


def image_hash():
    """sha256 (12 hex) of the Dockerfile and requirements/cuda.txt, the only inputs of the image's build."""
    if not Path(IMAGE_LOCK).is_file():
        raise WorkflowError(
            f"{IMAGE_LOCK}: missing; the image installs from it (python requirements/lock.py writes it)"
        )
    digest = hashlib.sha256(Path("Dockerfile").read_bytes())
    digest.update(Path(IMAGE_LOCK).read_bytes())
    return digest.hexdigest()[:12]


def image_input():
    """The image as an input of the containerised jobs, so it is built (or checked) first; only under Apptainer."""
    if apptainer_on() and "://" not in IMAGE:
        return [IMAGE]
    return []
