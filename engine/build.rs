//! Embeds the default model (`assets/model/`, produced by `cahl-tui pretrain`) when its files
//! exist; without them the binary still builds and says how to make one.
use std::path::Path;

const FILES: [&str; 4] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(embedded_model)");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/model");
    println!("cargo::rerun-if-changed={}", dir.display());
    let mut all = true;
    for f in FILES {
        let p = dir.join(f);
        println!("cargo::rerun-if-changed={}", p.display());
        all &= p.is_file();
    }
    if all {
        println!("cargo::rustc-cfg=embedded_model");
    }
}
