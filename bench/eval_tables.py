#!/usr/bin/env python3
"""Efficiency and misalignment tables from `cahl-tui eval` output folders.

    bench/eval_tables.py NAME=DIR [NAME=DIR ...]
"""
import json
import sys

rows = [a.split("=", 1) for a in sys.argv[1:]]
print("| variant | mode | items | success | invalid invocation rate | calls/task | repeated/task | extra/task | tokens/task | latency/task |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
summ = {}
for name, d in rows:
    s = json.load(open(f"{d}/summary.json"))
    summ[name] = s
    e = s["efficiency"]
    ok = s["items"] - s["failed"]
    print(f"| {name} | {s['mode']} | {s['items']} | {ok}/{s['items']} ({100*ok/max(s['items'],1):.1f}%) | "
          f"{100*e['invalid_rate']:.1f}% | {e['calls_per_task']:.2f} | {e['repeated_calls_per_task']:.2f} | "
          f"{e['extra_calls_per_task']:.2f} | {e['tokens_per_task']:.1f} | {e['latency_s_per_task']:.2f} s |")
print()
labels = ["plan_unparsable", "plan_too_coarse", "plan_too_fine", "subtask_value_missing", "executor_failed", "final_state_wrong"]
print("| variant (hierarchical) | failed | " + " | ".join(l.replace("_", " ") for l in labels) + " |")
print("|---|---:|" + "---:|" * len(labels))
for name, s in summ.items():
    if s["mode"] != "hierarchical":
        continue
    t = s["taxonomy"]
    print(f"| {name} | {s['failed']} | " + " | ".join(str(t.get(l, 0)) for l in labels) + " |")
