# Sourced by the stage scripts. The stage presets come from $HPA_RAY_PRESETS (default conf/cluster;
# conf/local-cluster for the local autoscaling cluster), each overlaid by the script's own --config.
presets=${HPA_RAY_PRESETS:-conf/cluster}
# Sourced by the stage scripts. `submit CMD...` runs `ray job submit --working-dir . -- CMD...`
# and ends with the stage's own exit status: `ray job submit` says 1 for any failed job, while
# the stages say 2 (unusable inputs or configuration) and 3 (some images failed, the rest done).
# A head started moments ago may answer "No available agent to submit job": tried again, 5 times.
submit() {
    local id status message code err attempt
    id="hpa-ray-$(date +%Y%m%d-%H%M%S)-$$-$RANDOM"
    err=$(mktemp)
    for attempt in 1 2 3 4 5; do
        status=0
        ray job submit --submission-id "$id" --working-dir . -- "$@" 2>"$err" || status=$?
        cat "$err" >&2
        grep -q "No available agent to submit job" "$err" || break
        echo "jobs: the head's job agent is not up yet; trying again in 10 s ($attempt/5)" >&2
        sleep 10
    done
    rm -f "$err"
    [ "$status" -eq 0 ] && return 0
    message=$(ray job status "$id" 2>&1 || true)
    code=$(grep -o 'failed with exit code [0-9]*' <<<"$message" | grep -o '[0-9]*$' | head -n 1 || true)
    return "${code:-$status}"
}
