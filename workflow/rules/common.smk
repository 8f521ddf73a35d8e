"""Shared state for every stage: config checks, the scale, the selections, and the source files each job reads.

Snakemake does not track Python modules a command imports, so every rule lists as inputs the package files its
command loads, derived from the import statements (deltanet/import_graph.py, no torch import). They exclude the
files of other variants and other tasks, so editing one variant reruns only its jobs. A train job lists only its own
variant and task modules; the code all train jobs share enters as a param, a hash of those files (train_shared_code).
"""

import hashlib
import json
import os
import re
import shlex
from functools import cache
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.settings.types import DeploymentMethod

from deltanet.config import ConfigError, checked_config, read_yaml
from deltanet import import_graph
from deltanet.import_graph import source_files, train_modules, train_shared_code_sha256
from deltanet.hashing import file_sha256
from deltanet.io import write_text_atomic
from deltanet.gpu_slots import MACHINE_LOCK_DIR, SlotError, plan_slots
from deltanet.machine import (
    NvidiaSmiError,
    nvidia_gpu_visible,
    nvidia_gpus,
    triton_interpreter_requested,
)
from deltanet.selection import resolve_scale, selected
from deltanet.tasks import TASK_IDS, get_task, task_settings
from deltanet.variants.catalog import check_known, variant_mixer, variant_names

PACKAGE = Path("deltanet")


def check_working_directory():
    """Refuse a working directory other than the workflow's folder (``--directory``), naming the folder to run in.

    The Snakefile's ``workdir:`` moves a run started elsewhere (``snakemake -s path/to/Snakefile``) there; only
    ``--directory`` overrides it, and the config, the package sources and results/ are paths in the workflow's folder.
    """
    here, home = Path.cwd().resolve(), Path(workflow.basedir).resolve()
    if here != home:
        raise WorkflowError(
            f"the working directory {here} is not the workflow's folder {home}: run without --directory "
            f"(outputs go to {home}/results/)"
        )


def check_yaml_file(path):
    """A YAML syntax error in ``path`` as one line naming file and line (Snakemake's own message names neither)."""
    if Path(path).is_file():
        try:
            read_yaml(path)
        except ConfigError as err:
            raise WorkflowError(str(err)) from None


def check_results_folder():
    """Snakemake fails with a traceback when results/ is not a folder (even for -n): say it in one line."""
    if Path("results").exists() and not Path("results").is_dir():
        raise WorkflowError(
            "results exists but is not a directory: move it away (the workflow writes its outputs under results/)"
        )


def check_config(config):
    """The CLI's checks, raised as a WorkflowError before any job is built.

    ``checked_config`` as the CLI loads it (numbers given as strings converted, schema and registered names, each
    scale's model resolved against its fidelity profile, so a profile edit reruns the jobs it changes); then every
    selected variant file must parse and declare its MIXER (read with ``ast``, no torch: a syntax error names its
    line; an import error is the job's failure line).
    """
    try:
        config.update(checked_config(config, source="config"))
        for name in selected(config, "variants"):
            variant_mixer(name)
    # ConfigError, or the registry's one-line message for a broken variant module
    except ValueError as err:
        raise WorkflowError(str(err)) from None


def resolve_and_announce_scale(config):
    """The scale to run (``deltanet.selection.resolve_scale``), printed where nobody can miss it."""
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


def job_config(config):
    """``(path, text)`` of the config the jobs read: config.yaml merged with --configfile/--config.

    The path names the sha256 of the text, so a file never changes once written: another Snakemake call with other
    settings (even one refused by the lock) names another file, and a running job keeps reading its own.
    """
    text = yaml.safe_dump(dict(config), sort_keys=True)
    return (
        f"results/configs/{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml",
        text,
    )


def job_config_file(wildcards, output):
    """JOB_CONFIG, as a param that Snakemake does not record (it skips params computed from a job's outputs).

    Its name changes with any config edit; the settings a job reads are params of their own, so an edit reruns
    only the jobs whose settings it changes.
    """
    return JOB_CONFIG


def write_job_config(path, text):
    """Write the jobs' config if it is not there yet; from `onstart`, so only a real run that holds the lock writes."""
    if Path(path).is_file():
        return
    try:
        write_text_atomic(path, text)
    except OSError as err:
        raise WorkflowError(
            f"cannot write {path} ({err.strerror or err}): results/ must be a writable directory"
        ) from None


def check_runnable_here(config, scale):
    """Refuse, before any job, settings that need a GPU when the jobs would run on this machine and it has none.

    A cluster executor runs the jobs elsewhere, so a GPU-less login node can still submit the full scale.
    """
    if not workflow.local_exec or nvidia_gpu_visible():
        return
    if config["scales"][scale]["resources"]["gpu"] > 0:
        raise WorkflowError(
            f"scale '{scale}' needs a GPU per job (scales.{scale}.resources.gpu) and this machine, where the jobs would "
            "run, has no NVIDIA GPU: run on a GPU machine, submit through a cluster profile (--profile profiles/slurm), "
            "or use --config scale=tiny"
        )
    # The Triton interpreter (TRITON_INTERPRET=1) runs the kernels on a CPU, slowly: for tests only.
    if config["kernels"] == "triton" and not triton_interpreter_requested():
        raise WorkflowError(
            "kernels 'triton' needs an NVIDIA GPU and this machine, where the jobs would run, has none: "
            "use --config kernels=auto (Triton on CUDA, naive elsewhere) or kernels=naive"
        )


def gpu_slot_plan_argument(wildcards):
    """The ``--plan`` argument of `deltanet gpu-slot` in the GPU rules' commands: the plan this run made
    (gpu_slot_plan), or nothing (a CPU scale, a cluster job). A resource, so that it is an argument (it survives
    Apptainer's --cleanenv, which drops variables) and yet no rerun trigger (moving to another machine reruns
    nothing)."""
    plan = (
        gpus(wildcards) > 0
        and gpu_slot_plan(wildcards.scale) is None
        and SLOT_PLANS.get(wildcards.scale)
    )
    return f"--plan {shlex.quote(plan)}" if plan else ""


SLOT_PLANS = {}  # scale -> the slot plan's JSON, once gpu_slot_plan made it


def jobs_run_here():
    """Whether this Snakemake process runs its jobs on this machine (not a cluster executor or a job step it started).

    A dry run executes through Snakemake's local "dryrun" plugin whatever the executor asked for; the one trace left
    of a remote one is ``use_threads``, which Snakemake forces on for it (a local dry run with --force-use-threads
    is taken for a remote one: it prints no plan).
    """
    if not workflow.is_main_process:
        return False
    if workflow.dryrun:
        return not workflow.execution_settings.use_threads
    return workflow.local_exec


@cache
def gpu_slot_plan(scale):
    """Plan the GPU slots of this machine for the local GPU jobs (deltanet/gpu_slots.py), once per run; returns the
    line that refuses bad input (nvidia-smi failing or hanging, a CUDA_VISIBLE_DEVICES naming GPUs that do not
    exist), or None.

    Prints the plan, caps Snakemake's ``gpu`` resource at the slot count (or keeps a smaller ``--resources gpu=N``)
    and hands the plan to the jobs' commands (gpu_slot_plan_argument). Under a cluster executor, or in the job step it
    starts, nothing: the scheduler picks each job's GPU.
    """
    if not jobs_run_here():
        return None
    try:
        gpus = nvidia_gpus()
        if not gpus:
            logger.warning(
                f"GPU plan: none (no nvidia-smi on this machine): the GPU jobs of scale '{scale}' cannot run here"
            )
            return None
        plan = plan_slots(
            gpus,
            config["jobs_per_gpu"],
            os.environ.get("CUDA_VISIBLE_DEVICES"),
            config.get("gpu_lock_dir", MACHINE_LOCK_DIR),
        )
    except (NvidiaSmiError, SlotError) as err:
        return f"GPU plan for scale '{scale}': {err}"
    slots = len(plan.slots)
    given = workflow.global_resources.get("gpu").value
    at_a_time = slots if given is None else min(given, slots)
    workflow.register_resource("gpu", at_a_time)
    SLOT_PLANS[scale] = plan.to_json()
    logger.warning(
        plan.describe(
            at_a_time, f" (--resources gpu={given})" if at_a_time < slots else ""
        )
    )
    return None


def gpu_slots_planned(wildcards):
    """Input function of the GPU rules that names no file: plans the slots as the DAG is built, the first moment
    Snakemake knows its executor (a dry run included). Bad input fails the DAG build, before any job or file; raised
    here, so that Snakemake's report of it ends a few lines after the cause."""
    if gpus(wildcards) > 0 and (refusal := gpu_slot_plan(wildcards.scale)):
        raise WorkflowError(refusal)
    return []


def report_failed_jobs():
    """From `onerror`: one line per failed job, its rule, wildcards and the cause from its log.

    The cause is the log's last line that is not indented: a `deltanet` command's closing error line, or the
    headline above an indented list (verify-kernels' failed checks). Snakemake's own summary of a failure ends in a
    few lines that never name the cause; these come just before them.
    """
    for job in sorted(workflow.scheduler.failed, key=str):
        logs = [Path(p) for p in job.log if Path(p).is_file()]
        lines = logs[0].read_text(errors="replace").splitlines() if logs else []
        cause = next(
            (
                line
                for line in reversed(lines)
                if line.strip() and not line[0].isspace()
            ),
            "no log written; see the error above",
        )
        where = ", ".join(f"{k}={v}" for k, v in job.wildcards_dict.items())
        logger.error(
            f"deltanet-repro: {job.rule.name} ({where}) failed: {cause.strip()}"
        )


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
    """Input function of the catch-all rule: fail the DAG build with the registry's line (the closest name)."""
    variant, task = wildcards.run.split("/")
    try:
        check_known(variant)
        get_task(task)
    except ValueError as err:
        raise WorkflowError(
            f"results/{wildcards.scale}/runs/{wildcards.run}.parquet: {err}"
        ) from None


def canonical(value):
    """A param value whose text does not depend on dict order (Snakemake compares params by repr)."""
    return json.dumps(value, sort_keys=True)


def scale_section(wildcards):
    return config["scales"][wildcards.scale]


def apptainer_on():
    return DeploymentMethod.APPTAINER in workflow.deployment_settings.deployment_method


def command_sources(command, *modules):
    """The package files ``python -m deltanet <command>`` loads, plus ``modules`` (imported by name at run time)."""
    return import_graph.command_sources(PACKAGE, command, *modules)


def train_own_sources(wildcards):
    """The job's own variant and task modules: inputs, so that an edit names the file as the reason to rerun."""
    return source_files(PACKAGE, train_modules(wildcards.variant, wildcards.task))


def train_shared_code(wildcards):
    """sha256 of the other package files the job runs (ops, model, training, config code, registries, ...).

    A param reruns the jobs when their content changes, as inputs would (Snakemake compares checksums of newer
    inputs, so a touch reruns neither). As inputs, these 40-odd files x 144 jobs were most of the full-grid DAG build.
    The job checks the same hash against its checkpoints (deltanet/import_graph.py).
    """
    return train_shared_code_sha256(PACKAGE, wildcards.variant, wildcards.task)


def train_task_settings(wildcards):
    """The task's resolved settings at this scale (grid + this task's overrides), nothing of other tasks."""
    section = scale_section(wildcards)
    overrides = section["task_overrides"].get(wildcards.task)
    settings = task_settings(wildcards.task, section["grid"], overrides)
    return canonical([{"id": s.id, "fields": s.fields} for s in settings])


def data_files():
    return sorted(str(p) for p in (PACKAGE / "data").glob("*") if p.is_file())


def device(wildcards):
    """cuda where the scale asks for a GPU, cpu otherwise."""
    return "cuda" if scale_section(wildcards)["resources"]["gpu"] > 0 else "cpu"


def verify_grid(wildcards):
    """The scale's ``verify_grid`` (default full); on a CPU the Triton kernels only run in the interpreter (training
    uses the naive ops): always the short grid."""
    quick = (
        device(wildcards) == "cpu"
        or scale_section(wildcards).get("verify_grid", "full") == "quick"
    )
    return "--quick" if quick else ""


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


# The container image (container.smk): built from the Dockerfile, which copies both locks and installs its LOCK arg.
IMAGE_LOCKS = ("requirements/cuda.txt", "requirements/cpu.txt")


def image_build_args(config):
    """The Dockerfile's ARG defaults (BASE, LOCK) with ``container.build_args`` over them, each checked."""
    args = dict(
        re.findall(r"^ARG (\w+)=(\S+)$", Path("Dockerfile").read_text(), re.MULTILINE)
    )
    for name, value in config["container"].get("build_args", {}).items():
        if name not in args:
            raise WorkflowError(
                f"container.build_args: {name!r} is not a build arg of the Dockerfile (it has {', '.join(args)})"
            )
        args[name] = value
    for lock in IMAGE_LOCKS:
        if not Path(lock).is_file():
            raise WorkflowError(
                f"{lock}: missing; the image copies it (python requirements/lock.py writes it)"
            )
    if args["LOCK"] not in IMAGE_LOCKS:
        raise WorkflowError(
            f"container.build_args: LOCK {args['LOCK']!r} is not one of the locks the image copies: {', '.join(IMAGE_LOCKS)}"
        )
    if local_base(args) and not Path(args["BASE"]).is_file():
        raise WorkflowError(
            f"container.build_args: BASE {args['BASE']}: no such image file"
        )
    return args


def local_base(args):
    """Whether BASE is an Apptainer image file (Bootstrap: localimage) rather than a registry reference."""
    return args["BASE"].endswith(".sif")


def image_hash(args):
    """sha256 (12 hex) of everything the image is built from: the Dockerfile, the locks, the build args and a local
    base's content."""
    digest = hashlib.sha256(Path("Dockerfile").read_bytes())
    for lock in IMAGE_LOCKS:
        digest.update(Path(lock).read_bytes())
    digest.update(canonical(args).encode())
    if local_base(args):
        digest.update(file_sha256(args["BASE"]).encode())
    return digest.hexdigest()[:12]


def definition_edits(args):
    """sed expressions that apply the build args to spython's definition, which expands ARGs only in FROM with their
    defaults, and makes its %files sources absolute so the build does not depend on its cwd.
    """
    header = (
        [
            r"s|^Bootstrap: docker$|Bootstrap: localimage|",
            f"s|^From: .*|From: {Path(args['BASE']).resolve()}|",
        ]
        if local_base(args)
        else [f"s|^From: .*|From: {args['BASE']}|"]
    )
    files = [f"s|^{lock} |{Path(lock).resolve()} |" for lock in IMAGE_LOCKS]
    edits = header + files + [f"s|^LOCK=.*|LOCK={args['LOCK']}|"]
    return " ".join(f"-e {shlex.quote(edit)}" for edit in edits)


def docker_build_args(args):
    return " ".join(
        f"--build-arg {shlex.quote(f'{name}={value}')}" for name, value in args.items()
    )


def image_input():
    """The image as an input of the containerised jobs, so it is built (or checked) first; only under Apptainer."""
    if apptainer_on() and "://" not in IMAGE:
        return [IMAGE]
    return []
