#!/usr/bin/env bash
# Every fold in parallel (one Ray Tune trial per fold, one GPU each with conf/cluster/train.yaml).
#   RAY_ADDRESS=http://127.0.0.1:8265 jobs/train.sh CELLS_DIR FOLDS_CSV RUN_DIR [KEY=VALUE ...]
# Ray's token authentication (its default) needs RAY_AUTH_MODE=token in the environment too.
set -euo pipefail
. "$(dirname "$0")/_submit.sh"
cells=$1 folds=$2 run_dir=$3
shift 3
submit \
  python -m hpa_ray.train --cells "$cells" --folds "$folds" --fold all --out "$run_dir" \
  --config "$presets/train.yaml" "$@"
