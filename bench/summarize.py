#!/usr/bin/env python3
"""Summarize bench/compare.sh results: best run of each figure per side, and ours/peer ratios."""
import glob
import json
import os
import sys


def best(reports, name, unit):
    vals = [r for rep in reports for f in rep["figures"] if f["name"] == name for r in f["runs"]]
    if not vals:
        return None
    return min(vals) if unit == "s" else max(vals)


def main(d):
    models = sorted({os.path.basename(p).split("-", 1)[1].rsplit("-", 1)[0]
                     for p in glob.glob(f"{d}/ours-*.json")})
    for m in models:
        ours = [json.load(open(p)) for p in sorted(glob.glob(f"{d}/ours-{m}-*.json"))]
        peer = [json.load(open(p)) for p in sorted(glob.glob(f"{d}/peer-{m}-*.json"))]
        print(f"\n{m}: {len(ours)} runs ours, {len(peer)} runs peer (best of all runs)")
        print(f"| figure | cahl-tui | transformers + PEFT | ratio (speed, ours/peer) |")
        print("|---|---|---|---|")
        names = [(f["name"], f["unit"]) for f in ours[0]["figures"]] if ours else []
        for name, unit in names:
            a, b = best(ours, name, unit), best(peer, name, unit)
            if a is None or b is None:
                continue
            ratio = b / a if unit == "s" else a / b
            print(f"| {name} | {a:.2f} {unit} | {b:.2f} {unit} | {ratio:.2f}x |")
        pa = max(r.get("peak_rss_bytes") or 0 for r in ours) / 1e9 if ours else 0
        pb = max(r.get("peak_rss_bytes") or 0 for r in peer) / 1e9 if peer else 0
        print(f"| peak RSS | {pa:.2f} GB | {pb:.2f} GB | {pb / pa if pa else 0:.2f}x less |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/work/bench-data/results")
