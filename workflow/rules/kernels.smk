rule verify_kernels:
    """Check the fast kernels against the naive ops; a failed case fails the job and nothing trains."""
    input:
        sources=command_sources("verify-kernels"),
        image=image_input(),
        gpu_slots=gpu_slots_planned,
    output:
        table="results/{scale}/kernels/verify.parquet",
        summary=report(
            "results/{scale}/kernels/verify.md",
            caption="../report/kernels.rst",
            category="Kernels",
        ),
    log:
        "results/{scale}/logs/verify_kernels.log",
    benchmark:
        "results/{scale}/benchmarks/verify_kernels.tsv"
    container:
        IMAGE
    threads: 1
    resources:
        gpu=gpus,
        gpu_slot_plan=gpu_slot_plan_argument,
        mem_mb=mem_mb,
        runtime=60,
    params:
        device=device,
        quick=verify_grid,
    shell:
        "python -m deltanet gpu-slot --gpus {resources.gpu} {resources.gpu_slot_plan} --"
        " python -m deltanet verify-kernels --out {output.table} --summary {output.summary}"
        " --device {params.device} {params.quick} > {log} 2>&1"
