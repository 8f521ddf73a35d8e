"""The CUDA image the project rules run in under --use-singularity (Apptainer deployment).

`config["container"]["image"]` is `build` (the DAG builds results/container/deltanet-<hash>.sif from the Dockerfile)
or a prebuilt image: a .sif path, docker://..., oras://... . Snakemake tells containers apart by their path string
only, so the built image's name carries a hash of the Dockerfile and its lock (requirements/cuda.txt): a changed
pin is a new path, and every containerised job reruns.
"""

BUILT_IMAGE = f"results/container/deltanet-{image_hash()}.sif"
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
        # Its content is in the image's name; a new timestamp alone (a checkout) must not rebuild the image.
        lock=ancient(IMAGE_LOCK),
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
        tag=f"deltanet:{image_hash()}",
    shell:
        """
        spython recipe {input.dockerfile} {output.definition} >{log} 2>&1
        # %files sources are host paths; make the COPY source absolute so the build does not depend on its cwd.
        sed -i "s|^{input.lock} |$PWD/{input.lock} |" {output.definition}
        # with a reachable Docker daemon, build with Docker and convert; else build from the definition
        if docker info >/dev/null 2>&1; then
            docker build --tag {params.tag} --file {input.dockerfile} . >>{log} 2>&1
            apptainer build {params.fakeroot} {output.image} docker-daemon://{params.tag} >>{log} 2>&1
        else
            apptainer build {params.fakeroot} {output.image} {output.definition} >>{log} 2>&1
        fi
        """
