//! Installs what a fresh machine lacks, each step only when needed.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

use crate::status;

/// Debian packages: TPM 2.0 libraries and tools (the TSS for tss-esapi, swtpm for tests and
/// the VM lane's guests), pkg-config for the -sys crates, bpftool for inspecting loaded
/// programs; for the VM lane (`cargo xtask vm-test`): qemu, a static busybox for the
/// initramfs, kmod (depmod) and xz-utils for the kernel packages' modules.
const APT_PACKAGES: &[&str] = &[
    "libtss2-dev",
    "pkg-config",
    "swtpm",
    "swtpm-tools",
    "tpm2-tools",
    "bpftool",
    "hyperfine",
    "postgresql",
    "qemu-system-x86",
    "busybox-static",
    "kmod",
    "xz-utils",
];

pub fn run() -> Result<()> {
    apt_packages()?;
    nightly_rust_src()?;
    bpf_linker()?;
    Ok(())
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "xtask setup: installing Debian packages: {}",
        missing.join(" ")
    );
    status(
        Command::new("apt-get").args(["update", "-qq"]),
        "apt-get update",
    )?;
    status(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install",
    )
}

fn nightly_rust_src() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .context("running rustup: the nightly toolchain is needed to build the eBPF programs")?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        return Ok(());
    }
    eprintln!("xtask setup: adding rust-src to the nightly toolchain");
    status(
        Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
        "rustup component add rust-src",
    )
}

/// bpf-linker, built against the nightly toolchain's own libLLVM (Debian 12 has no LLVM
/// matching the one rustc uses).
fn bpf_linker() -> Result<()> {
    if Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    let sysroot = Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .output()?;
    let lib = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim()).join("lib");
    let llvm = std::fs::read_dir(&lib)
        .with_context(|| format!("listing {}", lib.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|n| n.starts_with("libLLVM") && n.ends_with(".so"))
        .with_context(|| format!("no libLLVM-*.so in {}", lib.display()))?;
    let llvm = llvm
        .trim_start_matches("lib")
        .trim_end_matches(".so")
        .to_string();
    let major = llvm
        .split('-')
        .nth(1)
        .filter(|m| m.chars().all(|c| c.is_ascii_digit()))
        .with_context(|| format!("cannot tell the LLVM version from {llvm}"))?;
    eprintln!("xtask setup: building bpf-linker against {llvm} (about a minute)");
    let rustflags = format!(
        "-L {dir} -l dylib={llvm} -C link-arg=-Wl,-rpath,{dir}",
        dir = lib.display()
    );
    status(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{major},no-llvm-linking"))
            .env("RUSTFLAGS", rustflags)
            .env_remove("RUSTUP_TOOLCHAIN"),
        "cargo install bpf-linker",
    )?;
    if !Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        bail!("bpf-linker was installed but is not on PATH: add ~/.cargo/bin to PATH");
    }
    Ok(())
}
