#!/usr/bin/env bash
# The embedded model's 5-minute training check (issue #4): train for 5 minutes of wall-clock
# training time per mode on this machine, then compare the held-out (test split) greedy
# success and the rewards at the start and at the end of the run.
#
#   bench/five-minutes.sh [OUT_DIR]        MODES="cahl flat" MINUTES=5 SEED=0 CONFIG=FILE BIN=… to override
#
# Each run is `cahl-tui train --no-tui --max-minutes $MINUTES` with the default config (held-out
# evaluation on 24 test-split tasks before step 1, every 20 steps and after the last step; the
# evaluation time counts toward the 5 minutes). The summary compares the mean rewards of the
# first and last 5 steps and the baseline vs final held-out success.
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
    --seed "$seed" --session "$out/$m" ${CONFIG:+--config "$CONFIG"} > "$out/$m.log" 2> "$out/$m.time" || { cat "$out/$m.time" >&2; exit 1; }
done
python3 - "$out" $modes <<'PY'
import json, math, sys
out, modes = sys.argv[1], sys.argv[2:]
def mean(v):
    v = [x for x in v if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return sum(v) / len(v) if v else float("nan")
print(f"| mode | steps | planner reward first5 -> last5 | executor reward first5 -> last5 | test success baseline -> final | wall s |")
print("|---|---:|---|---|---|---:|")
for m in modes:
    rows = [json.loads(l) for l in open(f"{out}/{m}/metrics.jsonl")]
    steps = [r for r in rows if r["step"] > 0]
    evals = [r for r in rows if r.get("eval")]
    f5, l5 = steps[:5], steps[-5:]
    pr = (mean([r["planner_reward"] for r in f5]), mean([r["planner_reward"] for r in l5]))
    er = (mean([r["executor_reward"] for r in f5]), mean([r["executor_reward"] for r in l5]))
    b, f = evals[0]["eval"], evals[-1]["eval"]
    print(f"| {m} | {len(steps)} | {pr[0]:.3f} -> {pr[1]:.3f} | {er[0]:.3f} -> {er[1]:.3f} | "
          f"{100*b['success_rate']:.1f}% -> {100*f['success_rate']:.1f}% ({f['tasks']} tasks, step {evals[-1]['step']}) | "
          f"{steps[-1]['elapsed_s']:.0f} |")
PY
