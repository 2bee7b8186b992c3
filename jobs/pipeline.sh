#!/usr/bin/env bash
# The whole pipeline, one Ray job per stage, on data under ROOT (a bucket prefix such as
# s3://my-bucket/hpa, or a directory every node mounts):
#   ROOT/train/ (images), ROOT/train.csv, ROOT/test/ (images), ROOT/sample_submission.csv
#   RAY_ADDRESS=http://127.0.0.1:8265 jobs/pipeline.sh s3://my-bucket/hpa
# Outputs: ROOT/out/{segment,folds.csv,search,runs/b2,submission.csv}. Each stage resumes or
# can be rerun alone with its own script.
# Exit status: 0 all done; 3 segment or predict left some images out (said which), the rest
# done; any other: the stage named on stderr failed (2: unusable inputs or configuration) and
# the pipeline stopped there.
# Each stage runs with its preset from $HPA_RAY_PRESETS (default conf/cluster; see jobs/_submit.sh).
# Ray's token authentication (its default) needs RAY_AUTH_MODE=token in the environment too.
set -uo pipefail
root=$1
out=$root/out
stages=${HPA_RAY_STAGES:-$(dirname "$0")}  # the stage scripts (tests put stand-ins here)
partial=0

# stage NAME SCRIPT ARGS...: 0 goes on; 3 from segment or predict (some images failed, the
# others are done) goes on and is remembered; anything else stops the pipeline with that status.
stage() {
    local name=$1 script=$2 status=0
    shift 2
    echo "pipeline: $name" >&2
    "$stages/$script" "$@" || status=$?
    if [ "$status" -eq 3 ] && { [ "$name" = segment ] || [ "$name" = predict ]; }; then
        echo "pipeline: $name: some images failed (exit 3, listed above); the others are done, going on" >&2
        partial=3
    elif [ "$status" -eq 2 ]; then
        echo "pipeline: $name: unusable inputs or configuration (exit 2, error above); stopping" >&2
        exit 2
    elif [ "$status" -ne 0 ]; then
        echo "pipeline: $name failed (exit $status); stopping" >&2
        exit "$status"
    fi
}

# HPA's U-Net files: the segment preset's paths, or $HPA_RAY_MODELS/dpn_unet_{nuclei_v1,cell_3ch_v1}.pth
models=()
if [ -n "${HPA_RAY_MODELS:-}" ]; then
    models=("hpa.nuclei_model=$HPA_RAY_MODELS/dpn_unet_nuclei_v1.pth" "hpa.cell_model=$HPA_RAY_MODELS/dpn_unet_cell_3ch_v1.pth")
fi

stage segment segment.sh "$root/train" "$root/train.csv" "$out/segment" "${models[@]}"
stage folds folds.sh "$root/train.csv" "$out/folds.csv"
stage tune tune.sh "$out/segment/cells" "$out/folds.csv" "$out/search"
stage train train.sh "$out/segment/cells" "$out/folds.csv" "$out/runs/b2" --config "$out/search/best_config.yaml"
stage predict predict.sh "$root/test" "$out/runs/b2" "$out/submission.csv" --ids "$root/sample_submission.csv"
echo "pipeline: done; submission $out/submission.csv" >&2
exit "$partial"
