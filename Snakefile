"""deltanet-repro: verify_kernels -> train (variant x task) -> aggregate -> report, under results/<scale>/.

Run: `snakemake --cores all` (tiny scale on a CPU); `--use-singularity --singularity-args="--nv"` runs the project
rules in the CUDA image that the DAG builds from the Dockerfile. Started elsewhere (`snakemake -s path/to/Snakefile`)
it runs in this folder: this config.yaml, this results/. See README.md.
"""

from snakemake.utils import min_version

min_version("9.0")


workdir: workflow.basedir


include: "workflow/rules/common.smk"


check_working_directory()
check_yaml_file("config.yaml")


configfile: "config.yaml"


check_config(config)
check_results_folder()
SCALE = resolve_and_announce_scale(config)
VARIANTS = selected(config, "variants")
TASKS = selected(config, "tasks")
JOB_CONFIG, JOB_CONFIG_TEXT = job_config(config)


# Real runs only (never -n), after Snakemake took the lock and before any job runs or any output is deleted.
onstart:
    check_runnable_here(config, SCALE)
    write_job_config(JOB_CONFIG, JOB_CONFIG_TEXT)


onerror:
    report_failed_jobs()


# Built from the registries, so a path with an unknown variant or task matches no rule.
wildcard_constraints:
    scale="|".join(config["scales"]),
    variant="|".join(variant_names()),
    task="|".join(TASK_IDS),


include: "workflow/rules/container.smk"
include: "workflow/rules/kernels.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/identities.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        expand(rules.verify_kernels.output.summary, scale=SCALE),
        # Every run file is a target: Snakemake skips a missing intermediate file whose consumers look up to date.
        expand(rules.train.output.runs, scale=SCALE, variant=VARIANTS, task=TASKS),
        expand(rules.aggregate.output.csv, scale=SCALE),
        expand(rules.report.output.html, scale=SCALE),
