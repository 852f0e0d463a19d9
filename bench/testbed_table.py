"""The table of bench/testbed.sh: per mode, mean +- std over seeds of the final held-out
success and its change from step 0, the invalid-invocation rate and the failure sides."""
import json
import math
import sys
from pathlib import Path

out, modes = Path(sys.argv[1]), sys.argv[2:]


def stats(v):
    v = [x for x in v if x is not None and not math.isnan(x)]
    if not v:
        return "n/a"
    m = sum(v) / len(v)
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return f"{100*m:.1f} +- {100*sd:.1f}"


def num(x):
    return float("nan") if x is None else x


print("| mode | seeds | steps (mean) | held-out success step 0, % | final held-out success, % | change, points | invalid invocations, % | planner-side failures, % of tasks | executor-side failures, % of tasks |")
print("|---|---:|---:|---|---|---|---|---|---|")
for m in modes:
    runs = sorted(out.glob(f"{m}-*/metrics.jsonl"))
    first, last, delta, inv, ps, es, steps = [], [], [], [], [], [], []
    for p in runs:
        rows = [json.loads(l) for l in p.read_text().splitlines() if l.strip()]
        ev = [r for r in rows if r.get("eval")]
        if len(ev) < 2:
            continue
        b, f = ev[0]["eval"], ev[-1]["eval"]
        first.append(b["success_rate"])
        last.append(f["success_rate"])
        delta.append(f["success_rate"] - b["success_rate"])
        inv.append(num(f.get("invalid_rate")))
        ps.append(num(f.get("planner_side_rate")))
        es.append(num(f.get("executor_side_rate")))
        steps.append(max(r["step"] for r in rows))
    n = len(last)
    ms = sum(steps) / n if n else float("nan")
    print(f"| {m} | {n} | {ms:.0f} | {stats(first)} | {stats(last)} | {stats(delta)} | {stats(inv)} | {stats(ps)} | {stats(es)} |")
