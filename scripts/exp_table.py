#!/usr/bin/env python3
"""Compact Markdown table of an `unlearnrec experiment` results.csv (one seed per cell), as in docs/results.md.

Usage: scripts/exp_table.py DIR/results.csv [...]
"""
import csv
import sys

NAMES = {
    "retrain": "retrain",
    "retrain-seed2": "retrain, 2nd seed (noise floor)",
    "unlearnrec-zero-shot": "UnlearnRec zero-shot",
    "unlearnrec": "UnlearnRec + 1 fine-tune epoch",
    "finetune": "finetune (1 epoch)",
    "gradient-ascent": "gradient-ascent",
    "influence": "influence",
    "sisa": "sisa (8 user shards)",
}


def f(x, fmt):
    return "–" if x in ("", None) else fmt % float(x)


print("| model | protocol (edges) | method | Recall@20 | × retrain | removed-edge score before → after | non-edge "
      "| gap | MI-BF | MI-NG | MIA: removed called members | removed vs held-out AUC | removed median rank "
      "| top-20 agreement with retrain | time (s) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for path in sys.argv[1:]:
    rows = list(csv.DictReader(open(path)))
    retrain = {(r["model"], r["protocol"]): float(r["recall@20"]) for r in rows if r["method"] == "retrain"}
    for r in rows:
        proto = r["protocol"] + ("" if r["protocol"] == "adversarial" else " %g %%" % (100 * float(r["fraction"])))
        ref = retrain.get((r["model"], r["protocol"]))
        # Columns that older results.csv files lack are rendered as "–".
        members = r.get("removed_called_members")
        print("| %s | %s (%s) | %s | %s | %s | %s → %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["model"], proto, r["edges"], NAMES.get(r["method"], r["method"]),
            f(r["recall@20"], "%.4f"), "–" if ref is None else "%.3f" % (float(r["recall@20"]) / ref),
            f(r["removed_before"], "%.2f"), f(r["removed_after"], "%.2f"), f(r["non_edges_after"], "%.2f"),
            f(r["gap"], "%.2f"), f(r["mi_bf"], "%.2f"), f(r["mi_ng"], "%.2f"),
            f(members and 100 * float(members), "%.1f %%"), f(r.get("removed_vs_held_out_auc"), "%.3f"),
            f(r.get("removed_median_rank"), "%.1f"), f(r.get("agreement_top20"), "%.3f"),
            f(r["unlearn_secs"], "%.1f"),
        ))
