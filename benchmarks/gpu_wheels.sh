#!/usr/bin/env bash
# The wheels benchmarks/gpu_check.py --wheels DIR installs on a bare CUDA image (Python 3.12, x86_64): jsonschema and
# its dependencies (the config check), fla-core and einops (the kernel comparisons), Snakemake at this checkout's
# pinned version and its dependencies (the workflow part). Run it where a package index can be reached:
#     bash benchmarks/gpu_wheels.sh [DIR]     (default: wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-wheels}
mkdir -p "$dir"
snakemake=$(grep -oE '^snakemake==[0-9.]+' requirements/cpu.txt)
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform any)
target=(--only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}")
python3 -m pip download --quiet --no-deps "${target[@]}" -d "$dir" \
    jsonschema referencing jsonschema-specifications rpds-py attrs fla-core==0.6.0 einops
python3 -m pip wheel --quiet --no-deps -w "$dir" connection_pool==0.0.3  # a source archive only: built here
python3 -m pip download --quiet "${target[@]}" --find-links "$dir" -d "$dir" "$snakemake"
echo "$(ls "$dir"/*.whl | wc -l) wheels in $dir"
