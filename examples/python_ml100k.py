"""Train LightGCN on ml-100k, forget 1 % of the users with UnlearnRec, audit against a retrain, and plot.

    pip install ./crates/python matplotlib      # matplotlib is optional: without it the plot is skipped
    python examples/python_ml100k.py [DATA_DIR]  # default ../shared/data/ml-100k (LightGCN text format)

About 2-4 minutes on 2 cores. Writes target/python_ml100k.png when matplotlib is installed.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

import unlearnrec as ur

data = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "../shared/data/ml-100k"
ds = ur.Dataset.load(data)
print(ds, f"{len(ds.pairs('train'))} training interactions")

t = time.perf_counter()
progress = importlib.util.find_spec("tqdm") is not None  # a progress bar when tqdm is installed
model = ur.train(ds, model="lightgcn", dim=64, epochs=30, seed=1, batch_size=2048, lr=5e-3, progress=progress)
print(f"trained in {time.perf_counter() - t:.1f}s:", {k: round(v, 4) for k, v in model.evaluate(ds).items()
                                                          if k in ("recall@20", "ndcg@20")})

t = time.perf_counter()
unl = ur.pretrain(model, ds, epochs=10, seed=1, progress=progress)
print(f"pre-trained the unlearner in {time.perf_counter() - t:.1f}s")

# Forget 1 % of the users (every interaction of each).
rng = np.random.default_rng(0)
users = rng.choice(ds.n_users, size=max(1, ds.n_users // 100), replace=False)
t = time.perf_counter()
forgot, receipt = model.forget(ds, unlearner=unl, users=users)
t_unlearn = time.perf_counter() - t
print(f"UnlearnRec forgot {receipt['edges']} interactions of {receipt['users']} users in {t_unlearn:.2f}s "
      f"(request {receipt['request_id']}, new checkpoint sha256 {receipt['checkpoint_after_sha256'][:12]}…)")

t = time.perf_counter()
retrained, _ = model.forget(ds, users=users, method="retrain")
t_retrain = time.perf_counter() - t
print(f"exact retrain took {t_retrain:.1f}s")

removed = forgot.removed
rows = []
for name, m in (("original", model), ("unlearnrec", forgot), ("retrain", retrained)):
    metrics = m.evaluate(ds)
    report = ur.audit(m, ds, removed=removed, original=None if m is model else model)
    rows.append((name, metrics["recall@20"], report["rank"]["median_rank"], report["mia"]["removed_member_fraction"]))
print("| model | Recall@20 | removed items' median rank | removed called members |")
print("|---|---|---|---|")
for name, recall, rank, member in rows:
    print(f"| {name} | {recall:.4f} | {rank:.1f} | {member:.3f} |")

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib is not installed: no plot")
else:
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    names = [r[0] for r in rows]
    for ax, col, title in zip(axes, (1, 2, 3), ("Recall@20 (test)", "median rank of removed items",
                                                 "removed pairs called members")):
        ax.bar(names, [r[col] for r in rows], color=["#888", "#1f77b4", "#2ca02c"])
        ax.set_title(title, fontsize=10)
    fig.suptitle(f"ml-100k LightGCN, {receipt['users']} users forgotten: UnlearnRec {t_unlearn:.1f}s, "
                 f"retrain {t_retrain:.1f}s", fontsize=10)
    fig.tight_layout()
    out = Path(__file__).resolve().parents[1] / "target" / "python_ml100k.png"
    out.parent.mkdir(exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")
