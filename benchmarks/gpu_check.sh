#!/usr/bin/env bash
# GPU check (issue 6): bf16 autocast / channels_last (/ torch.compile) against fp32 at the FFHQ128
# architecture, then training images/s of PDAE and Diff-AE; writes benchmarks/results/gpu_check_<date>.json.
#
#   benchmarks/gpu_check.sh                 # ~2-3 min on one modern GPU
#   benchmarks/gpu_check.sh --compile       # also torch.compile (adds minutes of compilation)
#   benchmarks/gpu_check.sh --steps 50      # any other benchmarks/gpu_check.py option
#
# Python: $PYTHON, else the repository's .venv, else python3 (needs torch and this repository's deps).
# Without a CUDA device it prints why and exits 0 without writing anything.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-}
if [[ -z $PY ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c "import torch" 2>/dev/null; then
    echo "gpu_check: error: $PY cannot import torch; set PYTHON to an interpreter with this project installed" >&2
    exit 2
fi
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device available here (torch.cuda.is_available() is False); nothing checked or written"
    exit 0
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
exec "$PY" benchmarks/gpu_check.py "$@"
