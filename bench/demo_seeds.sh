#!/usr/bin/env bash
# The default demo on several seeds, one after another (never two at once on a small machine):
#   bash bench/demo_seeds.sh OUT_BASE SEED [SEED ...]
# Each seed's outputs go to OUT_BASE/seed-N/, its console to OUT_BASE/seed-N.log;
# then: python bench/demo_table.py OUT_BASE
set -uo pipefail
base=$1; shift
mkdir -p "$base"
for seed in "$@"; do
    rm -rf "$base/seed-$seed"
    /usr/bin/time -f "wall %e s" python -m hpa_ray demo --seed "$seed" --out "$base/seed-$seed" \
        > "$base/seed-$seed.log" 2>&1
    echo "seed $seed: $(grep -a 'demo finished' "$base/seed-$seed.log")"
done
