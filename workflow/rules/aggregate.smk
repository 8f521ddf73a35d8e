rule aggregate:
    """The accuracies table (the reference table's shape) from every selected run file."""
    input:
        runs=run_files,
        sources=command_sources("aggregate"),
        data=data_files(),
        image=image_input(),
    output:
        csv=report(
            "results/{scale}/accuracies.csv",
            caption="../report/accuracies.rst",
            category="Accuracies",
        ),
        parquet="results/{scale}/accuracies.parquet",
        md="results/{scale}/accuracies.md",
    log:
        "results/{scale}/logs/aggregate.log",
    benchmark:
        "results/{scale}/benchmarks/aggregate.tsv"
    # light work: stays on the submit host under a cluster profile
    localrule: True
    container:
        IMAGE
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        runs_dir=runs_dir,
        out_dir=out_dir,
        variants=",".join(VARIANTS),
        tasks=",".join(TASKS),
    shell:
        "python -m deltanet aggregate --runs-dir {params.runs_dir} --scale {wildcards.scale}"
        " --out-dir {params.out_dir} --variants {params.variants} --tasks {params.tasks} > {log} 2>&1"
