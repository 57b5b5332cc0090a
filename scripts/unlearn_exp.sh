#!/usr/bin/env bash
# Unlearning comparison on one dataset/backbone: original vs UnlearnRec zero-shot vs +1 fine-tune epoch vs retrain,
# on a random 1 % request. Usage: unlearn_exp.sh DATASET MODEL_CKPT TAG [pretrain args...]
set -eu
B=target/release/unlearnrec
D=$1; CK=$2; TAG=$3; shift 3
R=target/runs/$TAG
mkdir -p $R
python3 - "$D" "$R/request.csv" <<'PY'
import random, sys
d, out = sys.argv[1], sys.argv[2]
pairs = []
for line in open(f"../shared/data/{d}/train.txt"):
    f = line.split()
    pairs += [(f[0], i) for i in f[1:]]
random.Random(2025).shuffle(pairs)
k = round(len(pairs) * 0.01)
with open(out, "w") as fh:
    fh.write("user,item\n")
    for u, i in sorted(pairs[:k]):
        fh.write(f"{u},{i}\n")
PY
/usr/bin/time -f "pretrain wall %e s" $B -q pretrain --model $CK --data ../shared/data/$D --out $R/unlearner.safetensors "$@" 2>&1 | tail -2
for ft in 0 1; do
  $B -q unlearn --model $CK --unlearner $R/unlearner.safetensors --data ../shared/data/$D --request $R/request.csv --skip-missing \
     --finetune-epochs $ft --out $R/unlearnrec_ft$ft.safetensors --receipt $R/receipt_ft$ft.json 2>&1 | tail -1
done
$B -q unlearn --model $CK --method retrain --data ../shared/data/$D --request $R/request.csv --skip-missing \
   --out $R/retrain.safetensors --receipt $R/receipt_retrain.json 2>&1 | tail -1
for m in original unlearnrec_ft0 unlearnrec_ft1 retrain; do
  f=$R/$m.safetensors; [ $m = original ] && f=$CK
  echo "$m $($B eval --model $f --data ../shared/data/$D --json | python3 -c "import json,sys; v=json.load(sys.stdin); print('recall@20 %.4f ndcg@20 %.4f' % (v['recall@20'], v['ndcg@20']))")"
done | tee $R/summary.txt
