//! The key map shown by `?` (also the source of truth for the docs).

/// Dashboard keys (train and replay): `(key, what it does)`.
pub const DASHBOARD_KEYS: &[(&str, &str)] = &[
    ("tab / shift-tab", "switch pane (trajectories, messages)"),
    ("1 / 2", "under 100x30: show the charts / the stream"),
    ("j k / ↓ ↑", "move selection / scroll"),
    ("PgDn PgUp", "move by 10"),
    ("enter", "expand / collapse the selected trajectory"),
    ("esc", "collapse"),
    (
        "f",
        "filter: all → failures → misaligned → each failure label",
    ),
    ("space", "freeze / unfreeze the stream"),
    ("/", "search task text or id (enter applies, empty clears)"),
    ("g", "jump to step"),
    (
        "c",
        "cycle right chart: rates (held-out ■) → planner, executor components → loss → KL",
    ),
    ("w", "toggle whole run / recent window"),
    ("m", "smooth the curves (EMA 0.8) / show raw values"),
    (
        "C",
        "in a components panel: all components, then each one alone",
    ),
    ("p", "pause / resume training (train)"),
    ("s", "save a checkpoint now (train)"),
    ("x", "stop training, with confirmation (train)"),
    ("d", "open the debugger on the selected trajectory"),
    ("v", "the session's cases and their last `cases run` table"),
    ("?", "this help"),
    (
        "q / ctrl-c",
        "quit (train: stops and saves first; again = now)",
    ),
];

/// Debugger keys: `(key, what it does)`.
pub const DEBUGGER_KEYS: &[(&str, &str)] = &[
    ("e", "edit the plan (one sub-task per line; esc applies)"),
    ("n / →", "run the next sub-task on the executor"),
    ("r", "run to the end"),
    (
        "z",
        "reset the branch (on the recording: a new copy of its plan)",
    ),
    ("b / B, tab", "next / previous branch"),
    ("j k", "select a step"),
    ("J K / PgDn PgUp", "scroll the step detail"),
    ("+ / -", "change the branch seed (resets it)"),
    ("p", "ask the planner for a new plan (new branch)"),
    ("c", "compare original / current / gold side by side"),
    (
        "m / g",
        "measure the whole plan: N sampled runs / one greedy run",
    ),
    ("M", "runs per measurement: 5, 10, 20, 50"),
    (
        "o",
        "choose the checkpoint whose adapters run (train, replay)",
    ),
    (
        "a",
        "save the branch as a case (cahl-tui cases run re-runs it)",
    ),
    (
        "L",
        "load / reload the model with the latest checkpoint (train, replay)",
    ),
    ("S", "save the debugger session"),
    ("esc / q", "close the debugger"),
];
