#!/usr/bin/env bash
# The ablation table of issue #6 on the built-in world: the embedded model trained for the same
# wall-clock budget in each mode (same seed, same tasks, same config), then every final
# checkpoint and the untrained base ("SFT-only": the embedded model is itself supervised on gold
# trajectories) evaluated greedily on the same test-split tasks.
#
#   bench/ablation.sh [OUT_DIR]     MINUTES=5 SEED=0 LIMIT=100 PAR=2 MODES="..." CONFIG=FILE to override
#
# PAR runs go side by side, each on one thread (CANDLE_NUM_THREADS=1), so every mode gets the
# same share of this 2-core machine; the budget is wall-clock (`--max-minutes`, evaluation
# included), so the modes differ in how many steps they reach, as they would for a user.
set -euo pipefail
out="${1:-bench-out/ablation}"
minutes="${MINUTES:-5}"
seed="${SEED:-0}"
limit="${LIMIT:-100}"
par="${PAR:-2}"
bin="${BIN:-target/release/cahl-tui}"
[ -x "$bin" ] || cargo build --release --workspace --quiet
modes="${MODES:-cahl flat frozen-planner frozen-executor separate steptool ih-grpo}"
mkdir -p "$out"
export CANDLE_NUM_THREADS=1 RAYON_NUM_THREADS=1
run_mode() {
  local m=$1
  rm -rf "$out/$m"
  /usr/bin/time -v "$bin" train --no-tui --mode "$m" --steps 100000 --max-minutes "$minutes" \
    --seed "$seed" --session "$out/$m" ${CONFIG:+--config "$CONFIG"} > "$out/$m.log" 2> "$out/$m.time"
  "$bin" eval --bench builtin --limit "$limit" --seed "$seed" --session "$out/$m" --quiet \
    --out "$out/eval-$m" > "$out/eval-$m.log" 2>&1
}
base_eval() {
  "$bin" eval --bench builtin --limit "$limit" --seed "$seed" --quiet --out "$out/eval-base" \
    > "$out/eval-base.log" 2>&1
  "$bin" eval --bench builtin --limit "$limit" --seed "$seed" --quiet --mode flat \
    --out "$out/eval-base-flat" > "$out/eval-base-flat.log" 2>&1
}
jobs_list=(base_eval)
for m in $modes; do jobs_list+=("run_mode $m"); done
i=0
for j in "${jobs_list[@]}"; do
  echo "== $j (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  $j &
  i=$((i + 1))
  if [ $((i % par)) -eq 0 ]; then wait; fi
done
wait
python3 - "$out" $modes <<'PY'
import json, math, sys
out, modes = sys.argv[1], sys.argv[2:]
def mean(v):
    v = [x for x in v if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return sum(v) / len(v) if v else float("nan")
def summ(d):
    s = json.load(open(f"{out}/{d}/summary.json"))
    rows = {r["name"]: r for r in s["table"]}
    cats = [f"calls-{k}" for k in range(1, 6)]
    cells = [f"{rows[c]['correct']}/{rows[c]['total']}" if c in rows else "" for c in cats]
    o = rows["overall"]
    return cells, f"{o['correct']}/{o['total']} ({100*o['correct']/max(o['total'],1):.1f}%)"
def rss(m):
    for l in open(f"{out}/{m}.time"):
        if "Maximum resident set size" in l:
            return int(l.split(":")[1]) / 1024
    return float("nan")
print("| variant | steps | s/step | peak RSS MB | planner reward (sampled) first5 -> last5 | executor reward (sampled) first5 -> last5 | in-run held-out success step 0 -> last | calls-1 | calls-2 | calls-3 | calls-4 | calls-5 | test overall |")
print("|---|---:|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|")
for name, d in [("SFT-only (embedded base, hierarchical)", "eval-base"), ("SFT-only (embedded base, flat)", "eval-base-flat")]:
    cells, o = summ(d)
    print(f"| {name} | 0 | | | | | | " + " | ".join(cells) + f" | {o} |")
for m in modes:
    rows = [json.loads(l) for l in open(f"{out}/{m}/metrics.jsonl")]
    steps = [r for r in rows if r["step"] > 0]
    evals = [r for r in rows if r.get("eval")]
    f5, l5 = steps[:5], steps[-5:]
    pr = (mean([r["planner_reward"] for r in f5]), mean([r["planner_reward"] for r in l5]))
    er = (mean([r["executor_reward"] for r in f5]), mean([r["executor_reward"] for r in l5]))
    b, f = evals[0]["eval"], evals[-1]["eval"]
    cells, o = summ(f"eval-{m}")
    sps = steps[-1]["elapsed_s"] / len(steps)
    print(f"| {m} | {len(steps)} | {sps:.2f} | {rss(m):.0f} | {pr[0]:.3f} -> {pr[1]:.3f} | {er[0]:.3f} -> {er[1]:.3f} | "
          f"{100*b['success_rate']:.1f}% -> {100*f['success_rate']:.1f}% | " + " | ".join(cells) + f" | {o} |")
PY
