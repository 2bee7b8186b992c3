# Sourced by the stage scripts. `submit CMD...` runs `ray job submit --working-dir . -- CMD...`
# and ends with the stage's own exit status: `ray job submit` says 1 for any failed job, while
# the stages say 2 (unusable inputs or configuration) and 3 (some images failed, the rest done).
submit() {
    local id status message code
    id="hpa-ray-$(date +%Y%m%d-%H%M%S)-$$-$RANDOM"
    status=0
    ray job submit --submission-id "$id" --working-dir . -- "$@" || status=$?
    [ "$status" -eq 0 ] && return 0
    message=$(ray job status "$id" 2>&1 || true)
    code=$(grep -o 'failed with exit code [0-9]*' <<<"$message" | grep -o '[0-9]*$' | head -n 1 || true)
    return "${code:-$status}"
}
