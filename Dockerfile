# deltanet-repro runtime image: CUDA, Python 3.11 (the host's minor version: Snakemake mounts its own sources into
# jobs), and exactly the packages of requirements/cuda.txt (torch with CUDA, the Triton it pins, the project's
# dependencies), each checked against its sha256. Regenerate the lock with `python requirements/lock.py`.
# The project code itself is not baked in: Snakemake runs jobs in the bound working directory, so
# `python -m deltanet` uses the checkout and code edits need no rebuild (only this file, the locks and the build
# args are in the image's hash).
# Non-root friendly: nothing in the image needs writing (caches go to /tmp), everything is world-readable; Apptainer
# runs as the calling user, Docker users pass --user "$(id -u):$(id -g)".
# Apptainer without Docker: `spython recipe Dockerfile deltanet.def && apptainer build --fakeroot deltanet.sif deltanet.def`
# (the workflow's build_container rule does exactly this, with the build args applied and the COPY sources made
# absolute).

# nvidia/cuda:12.8.1-runtime-ubuntu22.04, pinned by digest (a tag can be re-pushed). Digest only, no tag: Apptainer's
# docker:// transport rejects references with both. Check or refresh it with
# `docker buildx imagetools inspect nvidia/cuda:12.8.1-runtime-ubuntu22.04`: the registry is not reachable from
# this project's machines, so this digest comes from public Dockerfiles that pin this tag, unverified here.
# Build args (config.yaml `container.build_args`; Docker: --build-arg): BASE, the image to start from; LOCK, the lock to
# install, requirements/cuda.txt for this CUDA base. CI builds a CPU image with BASE=<a local Debian 12 .sif> and
# LOCK=requirements/cpu.txt (.ci/debian-base-image).
ARG BASE=nvidia/cuda@sha256:fcbbd60a5ad3db3a1c7375bf14546b369b54064c513224310b2026df50c7a9bd
FROM ${BASE}
ARG LOCK=requirements/cuda.txt

# Build-time settings are written on the commands themselves: spython turns ENV into %environment (runtime) and
# plain unexported variables in %post, so an ENV would not reach apt-get or pip in an Apptainer build.
# DELTANET_LOCK: a link to the lock the image was installed from; run rows record its path and sha256
# (deltanet/training/provenance.py).
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    TRITON_CACHE_DIR=/tmp/triton-cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    DELTANET_LOCK=/opt/deltanet/lock.txt

# gcc and the Python headers: Triton compiles its small C launcher at first use.
# DL3008 (unpinned apt versions): the base image fixes the Ubuntu release, whose archive only gets security fixes,
# and old package versions vanish from it, so exact pins would break rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        bash ca-certificates gcc libc6-dev python3.11 python3.11-dev python3.11-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv

# Only the locks, and only LOCK installed: every package pinned and hash-checked (pip refuses a missing pin or a
# file whose hash differs). Both are copied because spython leaves an ARG in a COPY source unexpanded.
COPY requirements/cuda.txt requirements/cpu.txt /opt/deltanet/requirements/
RUN pip install --no-cache-dir --require-hashes --requirement "/opt/deltanet/${LOCK}" \
    && ln -s "/opt/deltanet/${LOCK}" /opt/deltanet/lock.txt \
    && chmod -R a+rX /opt/venv /opt/deltanet
