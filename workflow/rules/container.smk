"""The CUDA image the project rules run in under --use-singularity (Apptainer deployment).

`config["container"]["image"]` is `build` (the DAG builds results/container/deltanet-<hash>.sif from the Dockerfile)
or a prebuilt image: a .sif path, docker://..., oras://... . Snakemake tells containers apart by their path string
only, so the built image's name carries a hash of what it is built from (common.smk image_hash): a changed pin is a
new path, and every containerised job reruns. `config["container"]["build_args"]` sets the Dockerfile's build args:
CI builds a CPU image on a local Debian 12 base (README.md "Containers").
"""

BUILD_ARGS = image_build_args(config)
BUILT_IMAGE = f"results/container/deltanet-{image_hash(BUILD_ARGS)}.sif"
IMAGE = (
    BUILT_IMAGE
    if config["container"]["image"] == "build"
    else config["container"]["image"]
)


# Runs on the host (no container:), and on the submit host under a cluster profile: building pulls the base image
# and packages, which compute nodes usually cannot.
rule build_container:
    input:
        dockerfile="Dockerfile",
        # Their content is in the image's name; a new timestamp alone (a checkout) must not rebuild the image.
        locks=[ancient(lock) for lock in IMAGE_LOCKS],
        base=[ancient(BUILD_ARGS["BASE"])] if local_base(BUILD_ARGS) else [],
    output:
        definition=BUILT_IMAGE.removesuffix(".sif") + ".def",
        image=BUILT_IMAGE,
    log:
        BUILT_IMAGE.removesuffix(".sif") + ".log",
    benchmark:
        BUILT_IMAGE.removesuffix(".sif") + ".benchmark.tsv"
    localrule: True
    # Where the host lacks them, --sdm conda provides apptainer and spython.
    conda:
        "../envs/build_container.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        fakeroot="--fakeroot" if config["container"]["fakeroot"] else "",
        tag=f"deltanet:{image_hash(BUILD_ARGS)}",
        definition_edits=definition_edits(BUILD_ARGS),
        # Docker cannot start from an Apptainer image file
        docker=("false" if local_base(BUILD_ARGS) else "true"),
        docker_build_args=docker_build_args(BUILD_ARGS),
    shell:
        """
        spython recipe {input.dockerfile} {output.definition} >{log} 2>&1
        sed -i {params.definition_edits} {output.definition}
        # with a reachable Docker daemon, build with Docker and convert; else build from the definition
        if {params.docker} && docker info >/dev/null 2>&1; then
            docker build {params.docker_build_args} --tag {params.tag} --file {input.dockerfile} . >>{log} 2>&1
            apptainer build {params.fakeroot} {output.image} docker-daemon://{params.tag} >>{log} 2>&1
        else
            apptainer build {params.fakeroot} {output.image} {output.definition} >>{log} 2>&1
        fi
        """
