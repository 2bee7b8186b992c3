#!/usr/bin/env bash
# The whole pipeline, one Ray job per stage, on data under ROOT (a bucket prefix such as
# s3://my-bucket/hpa, or a directory every node mounts):
#   ROOT/train/ (images), ROOT/train.csv, ROOT/test/ (images), ROOT/sample_submission.csv
#   RAY_ADDRESS=http://127.0.0.1:8265 jobs/pipeline.sh s3://my-bucket/hpa
# Outputs: ROOT/out/{segment,folds.csv,search,runs/b2,submission.csv}. Each stage resumes or
# can be rerun alone with its own script.
# Ray's token authentication (its default) needs RAY_AUTH_MODE=token in the environment too.
set -euo pipefail
root=$1
out=$root/out
here=$(dirname "$0")
# segment and predict exit non-zero when some images failed; the others are done, so go on
"$here/segment.sh" "$root/train" "$root/train.csv" "$out/segment" --config conf/cluster/segment.yaml || true
"$here/folds.sh" "$root/train.csv" "$out/folds.csv"
"$here/tune.sh" "$out/segment/cells" "$out/folds.csv" "$out/search"
"$here/train.sh" "$out/segment/cells" "$out/folds.csv" "$out/runs/b2" --config "$out/search/best_config.yaml"
"$here/predict.sh" "$root/test" "$out/runs/b2" "$out/submission.csv" --ids "$root/sample_submission.csv" || true
