#!/usr/bin/env bash
# Workflow benchmarks (figures, not tests):
#   1. DAG build time: `snakemake -n` of the full grid (24 variants x 6 tasks at scale=full); goal <= 2 s (no torch
#      import: variant names, mixers and rule inputs are read from the files with ast). Measured on the 2-core dev
#      machine under load from other jobs: 3.3-3.5 s before (the registry imported torch), 2.0 s after (snakemake's
#      own start is ~1.0 s of it); 1.8 s on the quiet machine (2026-11-29).
#   2. Wall time of the default `snakemake --cores all` run (tiny scale, every variant x task); goal <= 10 min.
#      2026-11-29, quiet 2-core machine: 667 s (11.1 min; 767 s before), 149 jobs incl. verify_kernels and identities.
#      Then the tiny budget became batch 16 x 256 steps at lr 1.5e-3 so that Gated DeltaNet learns context recall
#      (docs/fidelity.md, "Tiny scale"): 683-721 s over three runs (~1 s more per job). Where a job's ~10 s go:
#      ~3.6 s fixed (a job of one step: python + torch 1.2 s + torch._dynamo 1.3 s, which torch.optim's step imports
#      unconditionally, + torchmetrics 0.4 s + the rest), ~6 s training; Snakemake's own process used 58 CPU-s
#      for 149 jobs (0.4 s each; --scheduler greedy: 63 s, no gain). Scoring in batches of 128 instead of 16
#      saved ~0.6 s of a job's run but nothing measurable in the pipeline's wall time.
#      One tiny job (delta_net_4layer x memorization, process start to exit), paired runs against commit cdab558:
#      median 6.16 s now vs 6.17 s before (ratio 0.997): the new layers cost the job start nothing.
# Both run on a fresh copy of the workflow in a temp dir, so results/ and .snakemake/ here are left alone.
# Usage: benchmarks/workflow.sh [--dag-only]
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r Snakefile config.yaml pyproject.toml Dockerfile requirements workflow deltanet "$work"/
find "$work" -name __pycache__ -prune -exec rm -rf {} +
cd "$work"

seconds() { python3 -c 'import sys, time; print(f"{time.time() - float(sys.argv[1]):.1f}")' "$1"; }

start=$(date +%s.%N)
snakemake --dry-run --config scale=full --quiet rules > dag.txt 2>&1
echo "dag_build_seconds_full_grid: $(seconds "$start")  ($(awk '$1 == "train" {print $2; exit}' dag.txt) train jobs)"

[[ "${1:-}" == "--dag-only" ]] && exit 0
start=$(date +%s.%N)
snakemake --cores all --config scale=tiny --quiet rules > run.txt 2>&1 || { tail -50 run.txt; exit 1; }
echo "tiny_run_wall_seconds: $(seconds "$start")  ($(awk '$1 == "train" {print $2; exit}' run.txt) train jobs, $(nproc) cores)"
