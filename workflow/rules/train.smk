rule train:
    """Every run (setting x lr x weight decay x seed) of one variant on one task -> one parquet file."""
    input:
        verified=rules.verify_kernels.output.table,
        sources=train_own_sources,
        image=image_input(),
        gpu_slots=gpu_slots_planned,
    output:
        runs="results/{scale}/runs/{variant}/{task}.parquet",
    log:
        "results/{scale}/logs/train/{variant}/{task}.log",
    benchmark:
        "results/{scale}/benchmarks/train/{variant}/{task}.tsv"
    container:
        IMAGE
    threads: 1
    resources:
        gpu=gpus,
        gpu_slot_plan=gpu_slot_plan_argument,
        mem_mb=mem_mb,
        runtime=runtime,
    params:
        # the config file the job reads (results/configs/<content hash>.yaml)
        config=job_config_file,
        # generated datasets, shared by every variant of a task (written atomically; safe to delete)
        cache_dir="results/{scale}/datasets",
        # The package code every train job runs besides its variant and task modules (common.smk).
        shared_code=train_shared_code,
        # What the job reads from that file; a change here reruns exactly the jobs it concerns.
        task_settings=train_task_settings,
        grid=lambda wc: scale_section(wc)["grid"],
        model=lambda wc: canonical(scale_section(wc)["model"]),
        optim=lambda wc: canonical(scale_section(wc)["optim"]),
        seeds=canonical(config["seeds"]),
        kernels=config["kernels"],
        # the device the scale means: a GPU scale never falls back to the CPU (deltanet/training/device.py)
        device=device,
    shell:
        # gpu-slot: on a GPU machine, a slot and CUDA_VISIBLE_DEVICES of the job's own (deltanet/gpu_slots.py).
        # glibc keeps large freed buffers instead of returning them to the OS on every step (CPU speed).
        "MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=17179869184"
        " python -m deltanet gpu-slot --gpus {resources.gpu} {resources.gpu_slot_plan} --"
        " python -m deltanet train --variant {wildcards.variant} --task {wildcards.task}"
        " --config {params.config} --scale {wildcards.scale} --device {params.device} --out {output.runs}"
        " --threads {threads}"
        " --cache-dir {params.cache_dir}"
        " > {log} 2>&1"


rule unregistered_run:
    """Matches only run paths naming an unregistered variant or task, and fails the DAG build with the known names."""
    input:
        unregistered_run,
    output:
        "results/{scale}/runs/{run}.parquet",
    wildcard_constraints:
        run=unregistered_run_pattern(),
