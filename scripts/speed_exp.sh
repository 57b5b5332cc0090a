#!/usr/bin/env bash
# UnlearnRec speed against retraining on one request (docs/benchmarks.md, "Unlearning speed against retraining").
# Run it on an otherwise idle machine. Writes OUT/{zs,ft_b4096,ft_b2048}.{safetensors,json} and a log on stdout.
# Usage: speed_exp.sh DATASET_DIR MODEL_CKPT MODEL_CONFIG_TOML UNLEARNER REQUEST_CSV OUT
#   MODEL_CONFIG_TOML: the configuration the model was trained with ([model] and [train]); one training epoch of
#   it is timed (3 epochs, validation every 3) to price a retrain.
set -eu
B=${B:-target/release/unlearnrec}
D=$1; CK=$2; CFG=$3; UN=$4; REQ=$5; O=$6
mkdir -p "$O"
/usr/bin/time -f "zero-shot wall %e s" "$B" -q unlearn --model "$CK" --unlearner "$UN" --data "$D" --request "$REQ" \
  --finetune-epochs 0 --out "$O/zs.safetensors" --receipt "$O/zs.json"
for b in 4096 2048; do
  printf '[finetune]\nbatch_size = %s\n' "$b" > "$O/ft$b.toml"
  /usr/bin/time -f "ft1 b$b wall %e s" "$B" -q unlearn --model "$CK" --unlearner "$UN" --data "$D" --request "$REQ" \
    --finetune-epochs 1 --config "$O/ft$b.toml" --out "$O/ft_b$b.safetensors" --receipt "$O/ft_b$b.json"
done
sed -e 's/^epochs *=.*/epochs = 3/' -e 's/^eval_every *=.*/eval_every = 3/' "$CFG" > "$O/train3.toml"
/usr/bin/time -f "train 3 epochs wall %e s" "$B" train --data "$D" --config "$O/train3.toml" --out "$O/train3.safetensors" \
  2>&1 | tr '\r' '\n' | grep -E "epoch +[0-9]+:|trained|wall"
for f in zs ft_b4096 ft_b2048; do
  python3 -c "import json; r=json.load(open('$O/$f.json')); print('$f phases', {k: round(v, 3) for k, v in r['phase_secs'].items()}, 'valid', r['valid'])"
  echo "$f test $("$B" eval --model "$O/$f.safetensors" --data "$D" --json | python3 -c "import json,sys; v=json.load(sys.stdin); print('%.4f %.4f' % (v['recall@20'], v['ndcg@20']))")"
done
