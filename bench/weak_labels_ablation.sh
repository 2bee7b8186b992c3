#!/usr/bin/env bash
# The ablation of docs/lab/quality.md: for each seed and label setting, the demo's data (2048², crops
# 128²), then cell / oracle / bag / bag_oracle trainings, each scored under predict's rules.
#   bash bench/weak_labels_ablation.sh OUT_DIR [SEED ...]        (default seeds: 101 202 303)
# Then: python bench/weak_labels_table.py OUT_DIR/*.json > table.md
set -euo pipefail
OUT="${1:?usage: bench/weak_labels_ablation.sh OUT_DIR [SEED ...]}"
shift
SEEDS="${*:-101 202 303}"
mkdir -p "$OUT"
SCORES="fusion=cell fusion=product fusion=blend fusion=blend,border_weight=0.8 fusion=blend,negative=complement"
SCORES="$SCORES fusion=blend,image_weight=0.7"
CELL="model=small epochs=24 batch_size=32 lr=0.003"
BAG="model=small epochs=72 batch_size=32 lr=0.003 bag_size=4 cell_loss_weight=1.0 pooling=attention"
for seed in $SEEDS; do
    for setting in sparse mild; do
        data="$OUT/${setting}_s${seed}.npz"
        [ -f "$OUT/${setting}_s${seed}_bag.json" ] && continue  # done in an earlier run
        mild=()
        [ "$setting" = mild ] && mild=(--set "class_show_probability={}")
        [ -f "$data" ] || python bench/weak_labels_data.py "$data" --seed "$seed" --crop 128 "${mild[@]}"
        [ -f "$OUT/${setting}_s${seed}_cell.json" ] || python bench/weak_labels.py "$data" --variants cell,oracle \
            --set $CELL --score $SCORES --json "$OUT/${setting}_s${seed}_cell.json"
        python bench/weak_labels.py "$data" --variants bag,bag_oracle --set $BAG --score $SCORES \
            --json "$OUT/${setting}_s${seed}_bag.json"
        rm -f "$data"  # ~110 MB each
    done
done
