//! `cahl-tui replay --summary` on something that is not a session fails with one clear line.
use std::process::Command;

#[test]
fn summary_of_a_folder_without_a_session_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a session").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cahl-tui"))
        .args(["replay", "--summary"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit status {:?}", out.status);
    assert!(err.contains("holds no session"), "{err}");
}
