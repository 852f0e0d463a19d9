#!/usr/bin/env bash
# The embedded model's 5-minute training check (issue #4): train for 5 minutes of wall-clock
# training time per mode on this machine, then compare the held-out (test split) greedy
# success and the rewards at the start and at the end of the run.
#
#   bench/five-minutes.sh [OUT_DIR]        MODES="cahl flat" MINUTES=5 SEED=0 CONFIG=FILE BIN=…
#                                          ARGS="--model DIR …" (extra `train` flags) to override
#
# Each run is `cahl-tui train --no-tui --max-minutes $MINUTES` with the default config (held-out
# evaluation on 24 test-split tasks before step 1, every 20 steps and after the last step; the
# evaluation time counts toward the 5 minutes). The summary compares the mean sampled rewards of
# the first and last fifth of the steps (and of the first and last 5 steps) and the held-out
# greedy success and rewards at every evaluation.
set -euo pipefail
out="${1:-bench-out/five-minutes}"
modes="${MODES:-cahl}"
minutes="${MINUTES:-5}"
seed="${SEED:-0}"
bin="${BIN:-target/release/cahl-tui}"
[ -n "${BIN:-}" ] || cargo build --release --workspace --quiet
mkdir -p "$out"
for m in $modes; do
  rm -rf "$out/$m"
  echo "== $m: $minutes minutes" >&2
  /usr/bin/time -v "$bin" train --no-tui --mode "$m" --steps 100000 --max-minutes "$minutes" \
    --seed "$seed" --session "$out/$m" ${CONFIG:+--config "$CONFIG"} ${ARGS:-} > "$out/$m.log" 2> "$out/$m.time" || { cat "$out/$m.time" >&2; exit 1; }
done
python3 - "$out" $modes <<'PY'
import json, math, sys
out, modes = sys.argv[1], sys.argv[2:]
def mean(v):
    v = [x for x in v if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return sum(v) / len(v) if v else float("nan")
print("| mode | steps | planner reward first -> last fifth (first5 -> last5) | executor reward first -> last fifth (first5 -> last5) | held-out success baseline -> final | wall s |")
print("|---|---:|---|---|---|---:|")
for m in modes:
    rows = [json.loads(l) for l in open(f"{out}/{m}/metrics.jsonl")]
    steps = [r for r in rows if r["step"] > 0]
    evals = [r for r in rows if r.get("eval")]
    q = max(1, len(steps) // 5)
    def span(key):
        v = lambda rs: mean([r[key] for r in rs])
        return f"{v(steps[:q]):.3f} -> {v(steps[-q:]):.3f} ({v(steps[:5]):.3f} -> {v(steps[-5:]):.3f})"
    b, f = evals[0]["eval"], evals[-1]["eval"]
    n = lambda e: round(e["success_rate"] * e["tasks"])
    print(f"| {m} | {len(steps)} | {span('planner_reward')} | {span('executor_reward')} | "
          f"{n(b)}/{b['tasks']} -> {n(f)}/{f['tasks']} (step {evals[-1]['step']}) | {steps[-1]['elapsed_s']:.0f} |")
for m in modes:
    rows = [json.loads(l) for l in open(f"{out}/{m}/metrics.jsonl")]
    print(f"\n{m}, held-out evaluations (greedy):")
    print("| step | success | planner reward | executor reward |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        e = r.get("eval")
        if e:
            print(f"| {r['step']} | {round(e['success_rate'] * e['tasks'])}/{e['tasks']} | {e['planner_reward']:.3f} | {e['executor_reward']:.3f} |")
PY
