#!/usr/bin/env python3
"""Prints the measured steps of a stream.csv (every row but the unmeasured UnlearnRec requests)."""
import csv
import sys

for path in sys.argv[1:]:
    print(f"== {path}")
    for r in csv.DictReader(open(path)):
        if r["method"] == "unlearnrec" and not r["removed_called_members"]:
            continue
        f = lambda k, d=3: f"{float(r[k]):.{d}f}" if r[k] else "–"
        print(f"{r['scenario']:>15} {r['step']:>4} {r['method']:>13} edges {r['edges']:>6} R@20 {f('recall@20', 4)} "
              f"members {f('removed_called_members')} rank {f('removed_median_rank', 0)} agree {f('agreement_top20')} "
              f"exposure {f('exposure_share')} secs {f('secs', 2)} total {f('total_secs', 1)}")
