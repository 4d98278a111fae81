//! Checks made before loading (and before the agent writes anything), so a binary compiled
//! without its eBPF object, a missing privilege or kernel feature is reported as one
//! sentence saying what to do, never as a raw errno from the loader.

use std::path::Path;

use crate::{probes::offsets::VMLINUX_BTF, Error};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

pub fn check() -> Result<(), Error> {
    super::embedded_object()?;
    if !privileged(&std::fs::read_to_string("/proc/self/status")?) {
        return Err(Error::NotPrivileged);
    }
    if !Path::new(VMLINUX_BTF).exists() {
        return Err(Error::NoBtf);
    }
    Ok(())
}

/// Whether the effective capabilities allow loading tracing programs: CAP_SYS_ADMIN, or
/// CAP_BPF together with CAP_PERFMON.
fn privileged(proc_status: &str) -> bool {
    let Some(hex) = proc_status.lines().find_map(|l| l.strip_prefix("CapEff:")) else {
        return false;
    };
    let Ok(caps) = u64::from_str_radix(hex.trim(), 16) else {
        return false;
    };
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

#[cfg(test)]
mod tests {
    use super::privileged;

    #[test]
    fn capabilities_from_proc_status() {
        assert!(privileged("Name:\tx\nCapEff:\t000001ffffffffff\n"));
        assert!(privileged("CapEff:\t000000c000000000\n")); // CAP_BPF + CAP_PERFMON
        assert!(!privileged("CapEff:\t0000008000000000\n")); // CAP_BPF alone
        assert!(!privileged("CapEff:\t0000000000000000\n"));
        assert!(!privileged("no caps line"));
    }
}
