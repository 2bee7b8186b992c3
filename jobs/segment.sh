#!/usr/bin/env bash
# Submit the segmentation stage to a running Ray cluster.
#   RAY_ADDRESS=http://127.0.0.1:8265 jobs/segment.sh INPUT_DIR LABELS_CSV OUTPUT_DIR [KEY=VALUE ...]
# Paths: s3://… or gs://… URIs (or a mount every node shares). Exit status 3: some images failed.
# Ray's token authentication (its default) needs RAY_AUTH_MODE=token in the environment too.
set -euo pipefail
. "$(dirname "$0")/_submit.sh"
input_dir=$1 labels=$2 output_dir=$3
shift 3
submit \
  python -m hpa_ray.segment --images "$input_dir" --labels "$labels" --out "$output_dir" \
  --config "$presets/segment.yaml" "$@"
