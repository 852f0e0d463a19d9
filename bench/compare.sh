#!/usr/bin/env bash
# Side-by-side benchmark: cahl-tui bench vs HF transformers + PEFT, interleaved A B A B on the
# same weights. Not part of the test suite.
#
#   bench/compare.sh [ROUNDS]
#
# Environment: VENV (python venv with torch, transformers, peft, gguf; default /work/venv-peer),
# DATA (where the checkpoints are written once; default /work/bench-data), BIN (cahl-tui binary;
# default target/release/cahl-tui), GGUF (SmolLM2 GGUF; default /work/main/models/...).
# Writes JSON reports to $DATA/results/ and prints a summary (bench/summarize.py): per figure,
# the best run of each side and the per-round ratios of medians. Each round runs our default
# kernel path, the AVX2 path forced (on CPUs with AVX-512), the base stored in f16, then the peer.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}
VENV=${VENV:-/work/venv-peer}
DATA=${DATA:-/work/bench-data}
BIN=${BIN:-target/release/cahl-tui}
GGUF=${GGUF:-/work/main/models/SmolLM2-135M-Instruct.Q4_1.gguf}
PY="$VENV/bin/python"
PEER=bench/peer_transformers.py
if [ ! -x "$PY" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install torch==2.15.0 transformers==5.23.0 peft==0.21.2 safetensors gguf
fi
[ -x "$BIN" ] || cargo build --release --workspace
mkdir -p "$DATA/results"
QWEN="$DATA/qwen2.5-0.5b-random"
SMOL="$DATA/smollm2-135m-q4_1-f32"
[ -f "$QWEN/model.safetensors" ] || "$PY" "$PEER" make-qwen "$QWEN"
[ -f "$SMOL/model.safetensors" ] || "$PY" "$PEER" make-from-gguf "$GGUF" "$SMOL"
"$PY" "$PEER" membw | tee "$DATA/results/membw.json"
# Our variants, each its own file (`ours-MODEL@VARIANT-R.json`): the default kernel path, the
# AVX2 path forced where the CPU has AVX-512 (does the wider tile pay on this host?), and the
# frozen base stored in f16.
variants=(default f16)
grep -qw avx512f /proc/cpuinfo && variants=(default avx2 f16)
for r in $(seq 1 "$ROUNDS"); do
  for m in smollm2-135m-q4_1-f32 qwen2.5-0.5b-random; do
    for v in "${variants[@]}"; do
      echo "== round $r $m ours $v: load $(cut -d' ' -f1-3 /proc/loadavg)"
      case $v in
        default) env=(); extra=(); file="ours-$m-$r.json" ;;
        avx2) env=(CAHL_CPU_KERNELS=avx2); extra=(); file="ours-$m@avx2-$r.json" ;;
        f16) env=(); extra=(--base-dtype f16); file="ours-$m@f16-$r.json" ;;
      esac
      env "${env[@]}" "$BIN" bench --model "$DATA/$m" --train-batches 1,8 --repeats 3 \
        "${extra[@]}" --json "$DATA/results/$file"
    done
    echo "== round $r $m peer: load $(cut -d' ' -f1-3 /proc/loadavg)"
    "$PY" "$PEER" bench "$DATA/$m" --train-batches 1,8 --repeats 3 \
      --json "$DATA/results/peer-$m-$r.json"
  done
done
"$PY" bench/summarize.py "$DATA/results"
