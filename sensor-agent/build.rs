//! Embeds the eBPF object built by `cargo xtask build` (nightly, bpfel-unknown-none).
use std::{env, path::PathBuf};

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .parent()
        .expect("the agent crate lives in the workspace")
        .to_path_buf();
    let object = env::var_os("SENSOR_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("sensor-ebpf/target/bpfel-unknown-none/release/sensor-ebpf"));
    println!("cargo:rerun-if-env-changed=SENSOR_EBPF_OBJECT");
    println!("cargo:rerun-if-changed={}", object.display());
    if !object.exists() {
        panic!(
            "the eBPF object {} does not exist: build with `cargo xtask build` \
             (it compiles sensor-ebpf first), or set SENSOR_EBPF_OBJECT",
            object.display()
        );
    }
    println!("cargo:rustc-env=SENSOR_EBPF_OBJECT={}", object.display());
}
