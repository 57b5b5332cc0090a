#!/usr/bin/env bash
# Adversarial protocol (docs/method.md §12): poison DATASET with least-related edges chosen by CLEAN_CKPT (a model trained on
# the clean data), train the backbone on the poisoned data with TRAIN_CONFIG, then compare unlearning methods on
# the injected edges (unlearn_exp.sh). Usage: adversarial_exp.sh DATASET_DIR CLEAN_CKPT TAG TRAIN_CONFIG [pretrain args...]
set -eu
B=${B:-target/release/unlearnrec}
D=$1; CLEAN=$2; TAG=$3; CFG=$4; shift 4
R=target/runs/$TAG
mkdir -p "$R"
[ -f "$R/data/adversarial.csv" ] || "$B" data poison "$D" --model "$CLEAN" --ratio "${RATIO:-0.5}" --out "$R/data"
[ -f "$R/poisoned.safetensors" ] || "$B" -q train --data "$R/data" --config "$CFG" --out "$R/poisoned.safetensors"
scripts/unlearn_exp.sh "$R/data" "$R/poisoned.safetensors" "$TAG" "$R/data/adversarial.csv" "$@"
