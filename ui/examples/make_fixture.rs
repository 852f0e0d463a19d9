//! Writes a small fixture session for manual and tmux end-to-end testing of `cahl-tui replay`.
//!
//! Usage: `cargo run -p cahl-ui --example make_fixture -- DIR [--damage]`

#[path = "../tests/common/fixture.rs"]
mod fixture;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: make_fixture DIR [--damage]");
        std::process::exit(2);
    };
    let damage = args.any(|a| a == "--damage");
    fixture::write_session(std::path::Path::new(&dir), 40, 3, damage);
    println!("wrote fixture session to {dir}");
}
