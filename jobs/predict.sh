#!/usr/bin/env bash
# Test images → submission with a run's fold models (classification in GPU actors).
#   RAY_ADDRESS=http://127.0.0.1:8265 jobs/predict.sh IMAGES_DIR RUN_DIR OUTPUT_CSV [--ids CSV] [KEY=VALUE ...]
# Exit status 3: some images failed (their rows are empty).
# Ray's token authentication (its default) needs RAY_AUTH_MODE=token in the environment too.
set -euo pipefail
. "$(dirname "$0")/_submit.sh"
images=$1 models=$2 output=$3
shift 3
submit \
  python -m hpa_ray.predict --images "$images" --run-dir "$models" --out "$output" \
  --config "$presets/predict.yaml" "$@"
