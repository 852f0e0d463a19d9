#!/usr/bin/env bash
# End-to-end check of `cahl-tui replay` driven through tmux (send-keys / capture-pane).
#
# Writes a fixture session (with a corrupt line and a torn tail) using the real session writer,
# opens it in the real binary inside a detached tmux session, presses keys and asserts on the
# captured screen. Skips (exit 0, with the reason) when tmux is not installed.
#
# Env: CAHL_TUI_BIN  path to the binary (default: $CARGO_TARGET_DIR or target, /debug/cahl-tui,
#                    built if missing)
#      E2E_TIMEOUT   seconds to wait for each expected text (default 20)
set -euo pipefail

if ! command -v tmux >/dev/null 2>&1; then
    echo "SKIP tui_replay.sh: tmux is not installed (apt-get install -y tmux)"
    exit 0
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# Where cargo puts what it builds: CARGO_TARGET_DIR (relative to the workspace) or target/.
TARGET=${CARGO_TARGET_DIR:-target}
case "$TARGET" in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
BIN=${CAHL_TUI_BIN:-$TARGET/debug/cahl-tui}
TIMEOUT=${E2E_TIMEOUT:-20}
# Build with the same package selection as `cargo test --workspace`, so dependencies are
# reused instead of being recompiled with another feature set.
if [ -z "${CAHL_TUI_BIN:-}" ]; then
    (cd "$ROOT" && cargo build -q --workspace --all-targets)
fi
FIXTURE=$TARGET/debug/examples/make_fixture

WORK=$(mktemp -d)
SESSION="cahl-e2e-$$"
cleanup() {
    tmux kill-session -t "$SESSION" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

[ -x "$FIXTURE" ] || (cd "$ROOT" && cargo build -q --workspace --all-targets)
"$FIXTURE" "$WORK/run" --damage

tmux new-session -d -s "$SESSION" -x 120 -y 40 \
    "TERM=xterm-256color '$BIN' replay '$WORK/run'; echo \"EXIT=\$?\"; sleep 60"

screen() { tmux capture-pane -p -t "$SESSION"; }

# wait_for TEXT: polls the pane until TEXT (fixed string) appears, or fails with the screen.
wait_for() {
    local deadline=$((SECONDS + TIMEOUT))
    while [ $SECONDS -lt $deadline ]; do
        if screen | grep -qF -- "$1"; then
            echo "ok: '$1'"
            return 0
        fi
        sleep 0.2
    done
    echo "FAIL: '$1' did not appear within ${TIMEOUT}s; screen was:" >&2
    screen >&2
    exit 1
}

keys() { tmux send-keys -t "$SESSION" "$@"; }

wait_for "REPLAY"
wait_for "file problems"
wait_for "trajectories · all · 120 shown"
wait_for "mean reward"
# The fixture's held-out evaluations: the latest in the status bar, markers in the rates chart.
wait_for "held-out 30% @40"
wait_for "■ held-out"

keys f
wait_for "trajectories · failures"
keys f
wait_for "trajectories · misaligned"
# Then each failure label the failed trajectories carry (the fixture's: plan_too_coarse).
keys f
wait_for "trajectories · plan_too_coarse"
wait_for "coarse"
keys f
wait_for "trajectories · all"

keys /
wait_for "search:"
keys -l "lyon"
keys Enter
wait_for "search 'lyon'"

keys Enter
wait_for "plan #0"
keys Enter

keys '?'
wait_for "keys (any key closes)"
keys Escape

keys g
keys -l "12"
keys Enter
wait_for "jumped to step 12"

keys d
wait_for "DEBUGGER"
wait_for "no model"
keys n
wait_for "needs a model"
keys Escape
wait_for "REPLAY"

keys q
wait_for "EXIT=0"

# A signal restores the terminal as q does: main screen, cursor shown, tty settings as before.
tmux kill-session -t "$SESSION" 2>/dev/null || true
for SIG in TERM HUP INT; do
    tmux new-session -d -s "$SESSION" -x 120 -y 40 \
        "S=\$(stty -g); TERM=xterm-256color '$BIN' replay '$WORK/run'; echo \"EXIT=\$?\"; \
         [ \"\$(stty -g)\" = \"\$S\" ] && echo TTY=same; sleep 60"
    wait_for "REPLAY"
    PANE_PID=$(tmux display -p -t "$SESSION" '#{pane_pid}')
    PID=$(pgrep -P "$PANE_PID" -f "replay" | head -n1)
    [ -n "$PID" ] || { echo "FAIL: no replay process under pane $PANE_PID" >&2; exit 1; }
    kill -s "$SIG" "$PID"
    wait_for "EXIT=0"
    wait_for "TTY=same"
    [ "$(tmux display -p -t "$SESSION" '#{alternate_on}')" = 0 ] \
        || { echo "FAIL: SIG$SIG left the alternate screen on" >&2; exit 1; }
    [ "$(tmux display -p -t "$SESSION" '#{cursor_flag}')" = 1 ] \
        || { echo "FAIL: SIG$SIG left the cursor hidden" >&2; exit 1; }
    echo "ok: SIG$SIG restored the terminal"
    tmux kill-session -t "$SESSION"
done

# Live training with the embedded model: held-out evaluation shows while it runs (status bar
# and the rates chart's markers); its two checkpoints then serve the case library below.
cat > "$WORK/live.toml" <<'TOML'
steps = 2
checkpoint_every = 1
tasks_per_step = 1
[rollout]
plans_per_task = 2
samples_per_step = 2
executions_per_plan = 1
[eval]
every = 1
tasks = 2
TOML
tmux new-session -d -s "$SESSION" -x 120 -y 40 \
    "TERM=xterm-256color '$BIN' train --config '$WORK/live.toml' --session '$WORK/live'; echo \"EXIT=\$?\"; sleep 60"
wait_for "TRAIN"
wait_for "■ held-out"
wait_for "│ held-out "
wait_for "finished"
keys q
wait_for "EXIT=0"
tmux kill-session -t "$SESSION"

# The debugger of its replay measures the recorded plan with the session's model (loaded on
# demand) and saves it as a case.
tmux new-session -d -s "$SESSION" -x 120 -y 40 \
    "TERM=xterm-256color '$BIN' replay '$WORK/live'; echo \"EXIT=\$?\"; sleep 60"
wait_for "REPLAY"
keys d
wait_for "DEBUGGER"
keys M
wait_for "m measures with 20 runs"
keys M
wait_for "m measures with 50 runs"
keys M
wait_for "m measures with 5 runs"
keys m
wait_for "measured: "
wait_for "5 sampled runs"
keys a
wait_for "case: expect"
keys -l "fails probe from the e2e test"
keys Enter
wait_for "case case-001 saved"
keys Escape
wait_for "REPLAY"
keys q
wait_for "EXIT=0"
tmux kill-session -t "$SESSION"
[ -f "$WORK/live/cases/case-001.json" ] || { echo "FAIL: no case file" >&2; exit 1; }
echo "ok: case saved"

# Re-run across the two checkpoints, then the table in the TUI.
RUST_BACKTRACE=0 "$BIN" cases run "$WORK/live" --checkpoint 1 --checkpoint step-2 --samples 2 \
    >"$WORK/cases.md" 2>"$WORK/cases.err" \
    || { echo "FAIL: cases run" >&2; cat "$WORK/cases.err" >&2; exit 1; }
grep -qF "| case | task | expects | step-1 | step-2 |" "$WORK/cases.md" \
    || { echo "FAIL: cases table" >&2; cat "$WORK/cases.md" >&2; exit 1; }
grep -qF "| case-001 |" "$WORK/cases.md" || { echo "FAIL: case row" >&2; exit 1; }
echo "ok: cases run across step-1 and step-2"
tmux new-session -d -s "$SESSION" -x 120 -y 40 \
    "TERM=xterm-256color '$BIN' replay '$WORK/live'; echo \"EXIT=\$?\"; sleep 60"
wait_for "REPLAY"
keys v
wait_for "cases · j/k scroll"
wait_for "│ step-1"
wait_for "│ step-2"
wait_for "· probe from the e2e test"
wait_for "passing"
keys Escape
keys q
wait_for "EXIT=0"
tmux kill-session -t "$SESSION"

echo "PASS tui_replay.sh"
