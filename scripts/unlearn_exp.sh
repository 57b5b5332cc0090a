#!/usr/bin/env bash
# Unlearning comparison on one dataset/backbone/request: original vs UnlearnRec zero-shot vs +1 fine-tune epoch
# vs retrain. Writes target/runs/TAG/{summary.md,...}.
# Usage: unlearn_exp.sh DATASET_DIR MODEL_CKPT TAG REQUEST_CSV [pretrain args...]
set -eu
B=${B:-target/release/unlearnrec}
D=$1; CK=$2; TAG=$3; REQ=$4; shift 4
R=target/runs/$TAG
mkdir -p "$R"
cp "$REQ" "$R/request.csv"
if [ ! -f "$R/unlearner.safetensors" ]; then
  /usr/bin/time -f "pretrain wall %e s" "$B" -q pretrain --model "$CK" --data "$D" --out "$R/unlearner.safetensors" "$@" 2>&1 | tail -2
fi
for ft in 0 1; do
  "$B" -q unlearn --model "$CK" --unlearner "$R/unlearner.safetensors" --data "$D" --request "$R/request.csv" \
     --finetune-epochs $ft --out "$R/unlearnrec_ft$ft.safetensors" --receipt "$R/receipt_ft$ft.json" 2>&1 | tail -1
done
if [ ! -f "$R/retrain.safetensors" ]; then
  "$B" -q unlearn --model "$CK" --method retrain --data "$D" --request "$R/request.csv" \
     --out "$R/retrain.safetensors" --receipt "$R/receipt_retrain.json" 2>&1 | tail -1
fi
python3 scripts/unlearn_table.py "$B" "$D" "$CK" "$R" | tee "$R/summary.md"
