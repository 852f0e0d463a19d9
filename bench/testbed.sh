#!/usr/bin/env bash
# The ablation of issues #19 and #20: every mode trained for the same wall-clock budget on a world, for
# several seeds, each run's held-out success measured greedily by the in-run evaluation before
# step 1 and after the last step (the same 100 test-split tasks per seed), then a table of
# mean +- std over seeds with the invalid-invocation rate and the misalignment split.
#
#   bench/testbed.sh [OUT_DIR]   WORLD=builtin-one-call MINUTES=6 SEEDS="0 1 2" PAR=2 BIN=... MODES="..."
#
# PAR runs go side by side, each with one worker thread, so every mode gets the same share of
# the machine; the budget (`--max-minutes`) includes both evaluations, as it would for a user.
set -euo pipefail
out="${1:-bench-out/testbed}"
world="${WORLD:-builtin-one-call}"
minutes="${MINUTES:-6}"
seeds="${SEEDS:-0 1 2}"
par="${PAR:-2}"
tasks="${TASKS:-100}"
bin="${BIN:-target/release/cahl-tui}"
modes="${MODES:-cahl separate frozen-planner frozen-executor flat steptool ih-grpo}"
[ -x "$bin" ] || cargo build --release --workspace --quiet
mkdir -p "$out"
cat > "$out/config.toml" <<TOML
# bench/testbed.sh: the defaults, on world $world, evaluated before step 1 and after the last.
[world]
kind = "$world"
[eval]
every = 1000000
tasks = $tasks
TOML
export CANDLE_NUM_THREADS=1 RAYON_NUM_THREADS=1
jobs_list=()
for s in $seeds; do for m in $modes; do jobs_list+=("$m:$s"); done; done
i=0
for j in "${jobs_list[@]}"; do
  m=${j%%:*}; s=${j##*:}
  echo "== $m seed $s ($(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  rm -rf "$out/$m-$s"
  "$bin" train --no-tui --mode "$m" --seed "$s" --steps 1000000 --max-minutes "$minutes" \
    --workers 1 --config "$out/config.toml" --session "$out/$m-$s" > "$out/$m-$s.log" 2>&1 &
  i=$((i + 1))
  if [ $((i % par)) -eq 0 ]; then wait; fi
done
wait
python3 "$(dirname "$0")/testbed_table.py" "$out" $modes
