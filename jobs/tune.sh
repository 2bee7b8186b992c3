#!/usr/bin/env bash
# Hyperparameter search (Optuna + ASHA), trials spread over the GPU workers.
#   RAY_ADDRESS=http://127.0.0.1:8265 jobs/tune.sh CELLS_DIR FOLDS_CSV RUN_DIR [KEY=VALUE ...] [--resume]
# Ray's token authentication (its default) needs RAY_AUTH_MODE=token in the environment too.
set -euo pipefail
. "$(dirname "$0")/_submit.sh"
cells=$1 folds=$2 run_dir=$3
shift 3
submit \
  python -m hpa_ray.tune --cells "$cells" --folds "$folds" --out "$run_dir" --config "$presets/tune.yaml" "$@"
