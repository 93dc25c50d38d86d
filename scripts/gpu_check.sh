#!/usr/bin/env bash
# The Freeze-Omni GPU check (core/compose/gpu_check.py): prints ONE JSON report on stdout.
# Needs an NVIDIA GPU and a CUDA build of torch; no network. Documented in docs/benchmarks.md ("GPU check").
#
#   scripts/gpu_check.sh [--out report.json] [--skip release_bench,quantized] [--fixture DIR] [--device cuda:0]
#
# Exit status: 0 every check passed on a GPU; 1 a check failed; 2 bad arguments; 3 no usable NVIDIA GPU (one line on
# stderr says so; the JSON holds the CPU-only parts). Python: $PARLEY_PYTHON, else .venv/bin/python, else python3.
set -u
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PARLEY_PYTHON:-$root/.venv/bin/python}"
[ -x "$py" ] || py="$(command -v python3)"
cd "$root" || exit 2
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m core.compose.gpu_check "$@"
