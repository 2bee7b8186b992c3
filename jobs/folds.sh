#!/usr/bin/env bash
# Image-level folds as a Ray job.
#   RAY_ADDRESS=http://127.0.0.1:8265 jobs/folds.sh LABELS_CSV OUTPUT_CSV [--n-folds 5] [--seed 0]
# Ray's token authentication (its default) needs RAY_AUTH_MODE=token in the environment too.
set -euo pipefail
. "$(dirname "$0")/_submit.sh"
labels=$1 output=$2
shift 2
submit python -m hpa_ray.folds --labels "$labels" --out "$output" --config "$presets/folds.yaml" "$@"
