//! `cargo xtask <task>`: the project's build, run and test entry points.
//!
//! Every task first makes sure the machine has what the build needs (`setup`), so the same
//! command works on a fresh machine and on a developer's.

mod setup;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build, run and test the credential-access sensor")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build needs (apt packages, nightly rust-src, bpf-linker); idempotent.
    Setup,
    /// Build the eBPF object and the release binaries `sensor-agent`, `sensorctl` and
    /// `sensor-collector` (and, for the tests, `sensor-agent-fault-injection`).
    Build,
    /// Build, then run the agent on its embedded defaults, printing events as JSON lines.
    Run {
        /// Extra arguments for `sensor-agent run`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build, run clippy with warnings as errors, then run every test (unit and integration;
    /// needs root), then the VM lane on Debian's 5.10 and 6.1 kernels (`SENSOR_VM_LANE=0` skips it).
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Boot other kernels (Debian 5.10, 6.1, 6.12) under qemu and run the integration tests
    /// inside, per probe mode (see docs/vm-lane.md).
    VmTest(vm::Args),
    /// Run the benchmarks and print their figures (see docs/performance.md).
    Bench,
}

fn main() -> Result<()> {
    let root = workspace_root();
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Build => build(&root).and_then(|()| build_fault_injection(&root)),
        Task::Run { args } => {
            build(&root)?;
            let agent = root.join("target/release/sensor-agent");
            let mut cmd = Command::new(&agent);
            cmd.args(["run", "--output", "json"]).args(&args);
            status(&mut cmd, "sensor-agent run")
        }
        Task::Test { args } => {
            build(&root)?;
            build_fault_injection(&root)?;
            boundaries(&root)?;
            // The lint set is only a rule if something runs it: an `unsafe` block without a
            // `// SAFETY:` comment, or any other warning, fails the test command.
            eprintln!("xtask: clippy (workspace lint set, warnings are errors)");
            let mut clippy = cargo(&root);
            clippy.args([
                "clippy",
                "--release",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]);
            status(&mut clippy, "cargo clippy")?;
            let mut cmd = cargo(&root);
            cmd.args(["test", "--release", "--workspace"]).args(&args);
            status(&mut cmd, "cargo test")?;
            if !vm::test_task_lane_enabled() {
                eprintln!("xtask: VM lane skipped (SENSOR_VM_LANE=0)");
                return Ok(());
            }
            eprintln!("xtask: VM lanes (cargo xtask vm-test; SENSOR_VM_LANE=0 skips them)");
            // Every lane runs, whatever an earlier one found; then any failure fails the task.
            let failed: Vec<String> = vm::test_task_lanes()
                .iter()
                .filter_map(|lane| vm::run(&root, lane, false).err())
                .map(|e| format!("{e:#}"))
                .collect();
            if failed.is_empty() {
                Ok(())
            } else {
                bail!("{}", failed.join("; "))
            }
        }
        Task::VmTest(args) => vm::run(&root, &args, true),
        Task::Bench => {
            build(&root)?;
            let mut cmd = Command::new("bash");
            cmd.arg(root.join("xtask/bench/run.sh")).current_dir(&root);
            status(&mut cmd, "benchmarks")
        }
    }
}

/// Builds the eBPF object (nightly, bpfel-unknown-none), then the release binaries, which
/// embed it.
fn build(root: &Path) -> Result<()> {
    setup::run()?;
    eprintln!("xtask: building the eBPF programs (sensor-ebpf, nightly)");
    let mut ebpf = Command::new("cargo");
    ebpf.args(["build", "--release"])
        .current_dir(root.join("sensor-ebpf"))
        // The nightly toolchain comes from sensor-ebpf/rust-toolchain.toml, not from ours.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC");
    status(&mut ebpf, "building sensor-ebpf")?;
    eprintln!("xtask: building sensor-agent, sensorctl and sensor-collector (release)");
    let mut bins = cargo(root);
    bins.args([
        "build",
        "--release",
        "--bin",
        "sensor-agent",
        "--bin",
        "sensorctl",
        "--bin",
        "sensor-collector",
    ]);
    status(&mut bins, "building the binaries")
}

/// The test-only agent binary; `run` does not need it.
fn build_fault_injection(root: &Path) -> Result<()> {
    // The integration tests make pipeline stages fail through this build (see
    // sensor-agent/src/pipeline/fault.rs). It has its own name and its own build, so the
    // `sensor-agent` binary above never contains fault injection; building from the
    // workspace root keeps the dependencies' features, and so their compiled copies, shared.
    eprintln!("xtask: building sensor-agent-fault-injection (release, tests only)");
    let mut faulty = cargo(root);
    faulty.args([
        "build",
        "--release",
        "--features",
        "sensor-agent/fault-injection",
        "--bin",
        "sensor-agent-fault-injection",
    ]);
    status(&mut faulty, "building the fault-injection test binary")
}

/// What a collector or another verifier links must stay free of the agent's database, TPM
/// stack and runtime: the format crate, and the TPM crate without its `device` feature
/// (checked by building it so, and by its dependency tree).
fn boundaries(root: &Path) -> Result<()> {
    /// The format crate and the TPM's logic hold no I/O stack; the collector and the
    /// transport build without the eBPF toolchain, the TPM library or a C crypto build.
    const LIBRARY: &[&str] = &["rusqlite", "tss-esapi", "tokio", "aya", "sensor-store"];
    const NETWORK: &[&str] = &["aya", "tss-esapi", "aws-lc-sys", "sensor-store"];
    eprintln!("xtask: dependency boundaries (sensor-log, sensor-tpm without `device`, sensor-forward, sensor-collector)");
    for (package, features, forbidden) in [
        ("sensor-log", None, LIBRARY),
        ("sensor-tpm", Some("--no-default-features"), LIBRARY),
        ("sensor-forward", None, NETWORK),
        ("sensor-collector", None, NETWORK),
    ] {
        let mut tree = cargo(root);
        tree.args(["tree", "-e", "normal", "--prefix", "none", "-p", package])
            .args(features);
        let output = tree.output().context("starting cargo tree")?;
        if !output.status.success() {
            bail!("cargo tree -p {package} failed");
        }
        let text = String::from_utf8_lossy(&output.stdout);
        for line in text.lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if forbidden.contains(&name) {
                bail!("{package} must not depend on {name}: {line}");
            }
        }
    }
    let mut check = cargo(root);
    check.args([
        "check",
        "--release",
        "-p",
        "sensor-tpm",
        "--no-default-features",
        "--lib",
    ]);
    status(
        &mut check,
        "cargo check -p sensor-tpm --no-default-features",
    )?;
    rust_version(root)
}

/// The workspace's `rust-version` is a promise only if no locked dependency needs a newer
/// compiler (the resolver does not enforce it): one that does fails the test command.
fn rust_version(root: &Path) -> Result<()> {
    let output = cargo(root)
        .args(["metadata", "--format-version", "1", "--locked"])
        .output()
        .context("starting cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    // "1.87" and "1.87.0" name the same compiler.
    let version = |v: &serde_json::Value| -> Option<[u64; 3]> {
        let mut out = [0; 3];
        for (slot, n) in out.iter_mut().zip(v.as_str()?.split('.')) {
            *slot = n.parse().ok()?;
        }
        Some(out)
    };
    let resolved: Vec<&str> = metadata["resolve"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["id"].as_str())
        .collect();
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    let ours = packages
        .iter()
        .find(|p| p["name"] == "sensor-agent")
        .and_then(|p| version(&p["rust_version"]))
        .context("sensor-agent has no rust-version")?;
    for p in &packages {
        if !resolved.contains(&p["id"].as_str().unwrap_or_default()) {
            continue;
        }
        if version(&p["rust_version"]).is_some_and(|needs| needs > ours) {
            bail!(
                "{} {} needs rust {}, past the workspace's rust-version: pin an older one (cargo update -p {} --precise VERSION)",
                p["name"].as_str().unwrap_or_default(),
                p["version"].as_str().unwrap_or_default(),
                p["rust_version"].as_str().unwrap_or_default(),
                p["name"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(())
}

fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root);
    cmd
}

fn status(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}
