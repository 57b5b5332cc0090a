#!/usr/bin/env bash
# Quality table runs: dataset x model; results appended to target/runs/quality.tsv
set -u
B=target/release/unlearnrec
D=${1:?dataset}; shift
EPOCHS=${EPOCHS:-30}
for M in "$@"; do
  out=target/runs/${D}_${M}.safetensors
  start=$(date +%s.%N)
  $B -q train --data ../shared/data/$D --model $M --dim 64 --batch-size 2048 --lr 5e-3 --epochs $EPOCHS --eval-every 5 --patience 0 --out $out > target/runs/${D}_${M}.log 2>&1
  end=$(date +%s.%N)
  r=$($B eval --model $out --data ../shared/data/$D --json)
  rec=$(echo "$r" | python3 -c "import json,sys; v=json.load(sys.stdin); print('%.4f\t%.4f' % (v['recall@20'], v['ndcg@20']))")
  printf "%s\t%s\t%s\t%.0f\t%s\n" "$D" "$M" "$EPOCHS" "$(echo "$end - $start" | bc)" "$rec" >> target/runs/quality.tsv
done
