#!/usr/bin/env bash
# The GPU check in one command (bench/gpu_check.py; bench/README.md says how to take it along):
#   bash bench/gpu_check.sh OUT_DIR [--size full|tiny] [--budget SECONDS] [--steps a,b,...]
# On a GPU machine without Ray, the bundle in .gpu-bundle/ (../shared/tools/gpu-bundle/make-bundle.sh)
# is installed into /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: bench/gpu_check.sh OUT_DIR [gpu_check.py options]}"
shift
if ! python3 -c "import ray" 2>/dev/null; then
    [ -f .gpu-bundle/install.sh ] || { echo "no Ray here and no .gpu-bundle/ to install it from"; exit 2; }
    bash .gpu-bundle/install.sh || exit 2
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PATH="/tmp/site/bin:$PATH"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
exec python3 bench/gpu_check.py "$OUT" "$@"
