#!/usr/bin/env bash
# Baseline unlearning methods on a run directory made by unlearn_exp.sh (same checkpoint, data and request):
# finetune, gradient-ascent, influence; adds rows to TAG/baselines.md. Usage: baselines_exp.sh DATASET_DIR CKPT TAG
set -eu
B=${B:-target/release/unlearnrec}
D=$1; CK=$2; TAG=$3
R=target/runs/$TAG
for m in finetune gradient-ascent influence; do
  [ -f "$R/$m.safetensors" ] || "$B" -q unlearn --model "$CK" --method $m --data "$D" --request "$R/request.csv" \
     --out "$R/$m.safetensors" --receipt "$R/receipt_$m.json" 2>&1 | tail -1
done
python3 - "$B" "$D" "$R" <<'PY' | tee "$R/baselines.md"
import json, subprocess, sys
b, d, r = sys.argv[1:4]
def ev(ck):
    v = json.loads(subprocess.run([b, "eval", "--model", ck, "--data", d, "--json"], check=True, capture_output=True, text=True).stdout)
    return v["recall@20"], v["ndcg@20"]
base = ev(f"{r}/retrain.safetensors")[0]
for m in ["finetune", "gradient-ascent", "influence"]:
    rec, ndcg = ev(f"{r}/{m}.safetensors")
    x = json.load(open(f"{r}/receipt_{m}.json")); f = x["forgetting"]
    print(f"| {m} | {rec:.4f} | {ndcg:.4f} | {rec / base:.3f} | {f['removed']['after']:.2f} | {f['non_edges']['after']:.2f} | {f['gap']:.2f} | {f['mi_bf']:.2f} | {f['mi_ng']:.2f} | {sum(x['phase_secs'].values()):.2f} |")
PY
