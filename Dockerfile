# deltanet-repro runtime image: CUDA, Python 3.11 (the host's minor version: Snakemake mounts its own sources into
# jobs), torch with CUDA and the Triton it pins, and the project's dependencies from pyproject.toml.
# The project code itself is not baked in: Snakemake runs jobs in the bound working directory, so
# `python -m deltanet` uses the checkout and code edits need no rebuild (only the pins are in the image's hash).
# Non-root friendly: nothing in the image needs writing (caches go to /tmp), everything is world-readable; Apptainer
# runs as the calling user, Docker users pass --user "$(id -u):$(id -g)".
# Apptainer without Docker: `spython recipe Dockerfile deltanet.def && apptainer build --fakeroot deltanet.sif deltanet.def`
# (the workflow's build_container rule does exactly this).
FROM nvidia/cuda:12.8.1-runtime-ubuntu22.04

ARG TORCH_VERSION=2.11.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128

# Build-time settings are written on the commands themselves: spython turns ENV into %environment (runtime) and
# plain unexported variables in %post, so an ENV would not reach apt-get or pip in an Apptainer build.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    TRITON_CACHE_DIR=/tmp/triton-cache \
    MPLCONFIGDIR=/tmp/matplotlib

# gcc and the Python headers: Triton compiles its small C launcher at first use.
# DL3008 (unpinned apt versions): the base tag fixes the Ubuntu release, whose archive only gets security fixes,
# and old package versions vanish from it, so exact pins would break rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        bash ca-certificates gcc libc6-dev python3.11 python3.11-dev python3.11-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv

# torch from the CUDA 12.8 index first (its wheel pins the matching triton), then the project's dependencies.
COPY pyproject.toml /opt/deltanet/pyproject.toml
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}" \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('/opt/deltanet/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /opt/deltanet/requirements.txt \
    && pip install --no-cache-dir -r /opt/deltanet/requirements.txt \
    && pip freeze > /opt/deltanet/requirements.lock \
    && chmod -R a+rX /opt/venv /opt/deltanet
