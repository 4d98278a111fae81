//! Embeds the eBPF object built by `cargo xtask build` (nightly, bpfel-unknown-none).
//!
//! Without that object (a fresh clone, before the first `cargo xtask build`), an empty
//! placeholder is embedded instead and the cfg `sensor_ebpf_placeholder` is set, so that
//! `cargo check`, `cargo clippy` and the unit tests work on stable alone; `Probes::load` then
//! fails at run time, naming `cargo xtask build`.
use std::{env, fs, path::PathBuf};

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .parent()
        .expect("the agent crate lives in the workspace")
        .to_path_buf();
    let object = env::var_os("SENSOR_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("sensor-ebpf/target/bpfel-unknown-none/release/sensor-ebpf"));
    println!("cargo::rerun-if-env-changed=SENSOR_EBPF_OBJECT");
    // A path that does not exist keeps the script rerunning, so the real object is picked up
    // by the first build after it appears.
    println!("cargo::rerun-if-changed={}", object.display());
    println!("cargo::rustc-check-cfg=cfg(sensor_ebpf_placeholder)");
    let embedded = if object.exists() {
        object
    } else {
        println!(
            "cargo::warning=the eBPF object {} does not exist: embedding an empty placeholder, \
             so this agent cannot load its probes (build with `cargo xtask build`)",
            object.display()
        );
        println!("cargo::rustc-cfg=sensor_ebpf_placeholder");
        let placeholder =
            PathBuf::from(env::var("OUT_DIR").expect("set by cargo")).join("sensor-ebpf.missing");
        fs::write(&placeholder, []).expect("write the placeholder into OUT_DIR");
        placeholder
    };
    println!("cargo::rustc-env=SENSOR_EBPF_OBJECT={}", embedded.display());
}
