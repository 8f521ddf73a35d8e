rule report:
    """The analysis report: accuracies next to the reported ones, per-task plots, run details, kernel checks."""
    input:
        runs=run_files,
        accuracies=rules.aggregate.output.parquet,
        kernels=rules.verify_kernels.output.summary,
        identities=rules.identities.output.json,
        sources=command_sources("report"),
        data=data_files(),
        image=image_input(),
    output:
        html=report(
            "results/{scale}/report.html",
            caption="../report/report.rst",
            category="Report",
        ),
        md="results/{scale}/report.md",
        heatmap=report(
            "results/{scale}/plots/heatmap.png",
            caption="../report/heatmap.rst",
            category="Plots",
        ),
        task_bars=report(
            "results/{scale}/plots/task_bars.png",
            caption="../report/task_bars.rst",
            category="Plots",
        ),
        reported_vs_reproduced=report(
            "results/{scale}/plots/reported_vs_reproduced.png",
            caption="../report/reported_vs_reproduced.rst",
            category="Plots",
        ),
    log:
        "results/{scale}/logs/report.log",
    benchmark:
        "results/{scale}/benchmarks/report.tsv"
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
    shell:
        "python -m deltanet report --runs-dir {params.runs_dir} --accuracies {input.accuracies}"
        " --out-dir {params.out_dir} --kernels-summary {input.kernels} --identities {input.identities}"
        " --scale {wildcards.scale} > {log} 2>&1"
