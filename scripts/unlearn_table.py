"""Markdown table of an unlearning run directory (see unlearn_exp.sh): test metrics from `unlearnrec eval`,
forgetting figures and times from the receipts."""
import json, subprocess, sys

b, data, original, run = sys.argv[1:5]

def test_metrics(ckpt):
    out = subprocess.run([b, "eval", "--model", ckpt, "--data", data, "--json"], check=True, capture_output=True, text=True)
    v = json.loads(out.stdout)
    return v["recall@20"], v["ndcg@20"]

rows = [("original", original, None), ("UnlearnRec zero-shot", f"{run}/unlearnrec_ft0.safetensors", f"{run}/receipt_ft0.json"),
        ("UnlearnRec + 1 fine-tune epoch", f"{run}/unlearnrec_ft1.safetensors", f"{run}/receipt_ft1.json"),
        ("retrain", f"{run}/retrain.safetensors", f"{run}/receipt_retrain.json")]
res = {name: test_metrics(ck) for name, ck, _ in rows}
base = res["retrain"][0]
print("| method | test Recall@20 | test NDCG@20 | × retrain | removed-edge mean score | non-edge | remaining-edge | gap | MI-BF | MI-NG | time (s) |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for name, ck, rec in rows:
    r, n = res[name]
    if rec is None:
        f = json.load(open(f"{run}/receipt_ft0.json"))["forgetting"]
        print(f"| {name} | {r:.4f} | {n:.4f} | {r / base:.3f} | {f['removed']['before']:.2f} | {f['non_edges']['before']:.2f} | {f['remaining']['before']:.2f} | – | – | – | – |")
        continue
    d = json.load(open(rec))
    f = d["forgetting"]
    secs = sum(d["phase_secs"].values())
    print(f"| {name} | {r:.4f} | {n:.4f} | {r / base:.3f} | {f['removed']['after']:.2f} | {f['non_edges']['after']:.2f} | {f['remaining']['after']:.2f} | {f['gap']:.2f} | {f['mi_bf']:.2f} | {f['mi_ng']:.2f} | {secs:.2f} |")
