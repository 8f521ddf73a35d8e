from deltanet.tasks import setting_seq_lens


rule identities:
    """Models identical to another by construction at the scale's sequence lengths (random tokens, shared weights)."""
    input:
        # `deltanet variants --identities` imports every variant
        sources=command_sources(
            "variants", *(f"deltanet.variants.{n}" for n in variant_names())
        ),
        image=image_input(),
    output:
        json="results/{scale}/identities.json",
    log:
        "results/{scale}/logs/identities.log",
    benchmark:
        "results/{scale}/benchmarks/identities.tsv"
    # seconds on one CPU thread at the full scale: stays on the submit host under a cluster profile
    localrule: True
    container:
        IMAGE
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        config=job_config_file,
        model=lambda wc: canonical(scale_section(wc)["model"]),
        # the sequence length of each task setting: what the check runs at (nothing else of the tasks)
        settings=lambda wc: canonical(setting_seq_lens(scale_section(wc))),
    shell:
        "python -m deltanet variants --identities --config {params.config} --scale {wildcards.scale}"
        " --out {output.json} > {log} 2>&1"
