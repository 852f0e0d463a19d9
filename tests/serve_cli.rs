//! End to end: `cahl-tui train --endpoint` samples its rollouts on a `cahl-tui serve` process;
//! the server is killed mid-run (the run stops with an error naming it, the session keeps its
//! steps and checkpoints), and `train --resume` continues on another server.
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cahl-tui"));
    c.env("RUST_BACKTRACE", "0");
    c
}

/// `cahl-tui serve` of the embedded model on a free loopback port: the child and its URL.
fn serve() -> (Child, String) {
    let mut child = bin()
        .args(["serve", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();
    (child, url)
}

const CONFIG: &str = r#"
tasks_per_step = 1
checkpoint_every = 1
[rollout]
plans_per_task = 2
samples_per_step = 2
executions_per_plan = 1
max_subtasks = 2
[rollout.planner]
max_tokens = 24
[rollout.executor]
max_tokens = 24
[eval]
every = 0
[backend]
retries = 1
backoff_s = 0.05
"#;

fn metric_steps(session: &Path) -> Vec<u64> {
    std::fs::read_to_string(session.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["step"].as_u64())
        .collect()
}

#[test]
fn train_on_a_server_that_dies_then_resume_on_another() {
    let d = tempfile::tempdir().unwrap();
    let config = d.path().join("small.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let session = d.path().join("run");

    let (mut first, url) = serve();
    let train = bin()
        .args(["train", "--no-tui", "--steps", "400", "--config"])
        .arg(&config)
        .arg("--session")
        .arg(&session)
        .args(["--endpoint", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the server once two steps are recorded.
    let t0 = Instant::now();
    while metric_steps(&session).len() < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no two steps in 5 minutes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let out = train.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the run went on without its server");
    assert!(
        err.contains(&format!("rollout endpoint {url}/v1")),
        "the error does not name the endpoint:\n{err}"
    );

    // The session is intact: every recorded step once, in order, and its checkpoints.
    let steps = metric_steps(&session);
    let done = *steps.last().unwrap();
    assert!((2..400).contains(&done), "{steps:?}");
    assert_eq!(steps, (1..=done).collect::<Vec<_>>());
    assert!(session.join(format!("checkpoints/step-{done}")).exists());
    let info = std::fs::read_to_string(session.join("run.json")).unwrap();
    assert!(info.contains("openai (1 endpoint"), "{info}");

    // Another server: --resume continues from the last checkpoint to the new end.
    let (mut second, url2) = serve();
    let out = bin()
        .args(["train", "--no-tui", "--resume", "--steps"])
        .arg((done + 2).to_string())
        .arg("--session")
        .arg(&session)
        .args(["--endpoint", &url2])
        .output()
        .unwrap();
    second.kill().unwrap();
    second.wait().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(metric_steps(&session), (1..=done + 2).collect::<Vec<_>>());
    // run.json names the server the run samples on now; served/ holds this process's
    // adapters only.
    let info = std::fs::read_to_string(session.join("run.json")).unwrap();
    assert!(info.contains(&format!("{url2}/v1")), "{info}");
    let runs: Vec<_> = std::fs::read_dir(session.join("served")).unwrap().collect();
    assert_eq!(runs.len(), 1);
    let versions: Vec<u64> = std::fs::read_to_string(session.join("trajectories.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["policy_version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, (0..done + 2).collect::<Vec<_>>());
}

#[test]
fn a_server_that_is_not_there_is_named_before_the_model_loads() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let d = tempfile::tempdir().unwrap();
    let config = d.path().join("small.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let out = bin()
        .args(["train", "--no-tui", "--config"])
        .arg(&config)
        .arg("--session")
        .arg(d.path().join("run"))
        .args(["--endpoint", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "rollout endpoint http://127.0.0.1:{port}/v1: GET /models failed 2 time(s)"
        )),
        "{err}"
    );
    assert!(!err.contains("loading"), "the model loaded first:\n{err}");
    let https = bin()
        .args(["train", "--no-tui", "--endpoint", "https://example.org"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&https.stderr);
    assert!(err.contains("https is not supported"), "{err}");
}

#[test]
fn debug_on_an_endpoint_refuses_names_the_server_does_not_serve() {
    let (mut server, url) = serve();
    let out = bin()
        .args(["debug", "--task-id", "builtin-test-0-3", "--endpoint", &url])
        .args(["--planner-model", "planner@7"])
        .output()
        .unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--planner-model \"planner@7\" is not served by")
            && err.contains("(it serves: embedded)"),
        "{err}"
    );
    // The server is gone now: the error names it.
    let out = bin()
        .args(["debug", "--task-id", "builtin-test-0-3", "--endpoint", &url])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("rollout endpoint {url}/v1")), "{err}");
    let both = bin()
        .args([
            "debug",
            "--task",
            "x",
            "--endpoint",
            &url,
            "--model",
            "embedded",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&both.stderr).contains("cannot be used with"));
}

/// The records of a session with what depends on timing or on the backend's name removed.
fn records(session: &Path, file: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(session.join(file))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            if let Some(o) = v.as_object_mut() {
                for k in [
                    "elapsed_s",
                    "step_time_s",
                    "rollout_s",
                    "tokens_per_s",
                    "memory_bytes",
                    "peak_rss_bytes",
                ] {
                    o.remove(k);
                }
                // Log-prob-derived numbers: the servers prefill whole prompts, the local
                // sampler reuses a cached prefix (the last bits of a float may differ).
                for policy in ["planner", "executor"] {
                    if let Some(p) = o.get_mut(policy).and_then(|p| p.as_object_mut()) {
                        for (_, x) in p.iter_mut() {
                            if let Some(f) = x.as_f64() {
                                *x = serde_json::json!(format!("{f:.4}"));
                            }
                        }
                    }
                }
            }
            v
        })
        .collect()
}

#[test]
fn a_seeded_run_on_two_serve_processes_records_what_the_local_backend_records() {
    let d = tempfile::tempdir().unwrap();
    let config = d.path().join("small.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let run = |session: &Path, endpoints: &[&str]| {
        let mut c = bin();
        c.args([
            "train", "--no-tui", "--steps", "3", "--seed", "4", "--config",
        ])
        .arg(&config)
        .arg("--session")
        .arg(session);
        for e in endpoints {
            c.args(["--endpoint", e]);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let local = d.path().join("local");
    run(&local, &[]);
    let (mut a, url_a) = serve();
    let (mut b, url_b) = serve();
    let served = d.path().join("served");
    run(&served, &[&url_a, &url_b]);
    for s in [&mut a, &mut b] {
        s.kill().unwrap();
        s.wait().unwrap();
    }
    let (lt, st) = (
        records(&local, "trajectories.jsonl"),
        records(&served, "trajectories.jsonl"),
    );
    assert_eq!(lt.len(), 3);
    assert_eq!(lt, st, "the trajectories differ");
    assert_eq!(
        records(&local, "metrics.jsonl"),
        records(&served, "metrics.jsonl"),
        "the metrics differ"
    );
}
