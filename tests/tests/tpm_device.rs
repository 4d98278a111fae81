//! The agent anchored through the kernel's TPM driver, as on a host with a TPM: with no TCTI
//! configured it takes `/dev/tpmrm0` (the kernel's resource manager). `tests/tpm.rs` covers
//! the attacks against a swtpm it drives directly; here the same log is anchored and
//! verified through the kernel. Only the VM lane's guests have the device (a swtpm behind
//! qemu's TPM TIS), so these tests are ignored elsewhere, and the lane runs them
//! (`cargo xtask vm-test --test tpm_device` passes `--include-ignored`). They share the one
//! device, and so its PCR: they run one at a time.

use std::{
    path::Path,
    process::Command,
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use sensor_tests::{
    assert_anchored_after_stop, assert_cut_tail_named, openloop, secret_in, sensorctl, wait_entry,
    wait_status, Agent, STORM,
};
use sensor_tpm::{DEFAULT_DEVICE, DEFAULT_NV_INDEX};

const NEEDS_DEVICE: &str = "the tests run in the VM lane: cargo xtask vm-test --test tpm_device";

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The kernel's device, as a TCTI.
fn tcti() -> String {
    format!("device:{DEFAULT_DEVICE}")
}

/// An agent on the default TPM, its state directory and the watched file; the device lock.
struct Setup {
    _device: MutexGuard<'static, ()>,
    state: tempfile::TempDir,
    _files: tempfile::TempDir,
    secret: std::path::PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let device = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(
            Path::new(DEFAULT_DEVICE).exists(),
            "no {DEFAULT_DEVICE}: {NEEDS_DEVICE}"
        );
        // A new log on a TPM whose counter an earlier log defined is `log wiped`, by design
        // (docs/tpm.md), and the lane's earlier tests anchored on this device: undefine the
        // counter first, as an operator re-provisioning the TPM for a new log would.
        let out = Command::new("tpm2_nvundefine")
            .args(["-T", &tcti(), &format!("{DEFAULT_NV_INDEX:#x}")])
            .output()
            .unwrap_or_else(|e| panic!("tpm2_nvundefine ({e}): run `cargo xtask setup`"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || err.contains("handle"),
            "tpm2_nvundefine: {err}"
        );
        let files = tempfile::tempdir().expect("tempdir");
        let secret = secret_in(files.path());
        Setup {
            _device: device,
            state: tempfile::tempdir().expect("tempdir"),
            _files: files,
            secret,
        }
    }

    /// No `tcti`: the agent finds the device itself. Quotes every second.
    fn start(&self) -> Agent {
        let config = format!(
            "[agent]\n{STORM}[tpm]\nquote_period = \"1s\"\n[[watch]]\npath = \"{}\"\nkind = \"ssh-key\"\n",
            self.secret.display()
        );
        Agent::start_at(&config, self.dir(), &[])
    }

    fn dir(&self) -> &Path {
        self.state.path()
    }

    fn storm(&self, opens: u64) {
        let status = openloop(opens, &self.secret).wait().expect("openloop");
        assert!(status.success());
    }

    /// `sensorctl verify --tpm device:/dev/tpmrm0`: (exit code, stdout and stderr).
    fn verify_tpm(&self) -> (i32, String) {
        let (code, out, err) = sensorctl(self.dir(), &["verify", "--tpm", &tcti()]);
        (code, format!("{out}{err}"))
    }
}

#[test]
#[ignore = "needs the kernel's TPM device /dev/tpmrm0: run in the VM lane"]
fn anchors_through_the_kernel_driver_by_default_and_verifies() {
    let s = Setup::new();
    let mut agent = s.start();
    s.storm(5_000);
    wait_entry(s.dir(), "tpm_quote", Duration::from_secs(30));
    wait_status(s.dir(), "anchor:      anchored in the TPM");
    let (code, out) = s.verify_tpm();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("tpm: consistent"), "{out}");
    agent.stop();
    assert_anchored_after_stop(s.dir(), &tcti());
}

#[test]
#[ignore = "needs the kernel's TPM device /dev/tpmrm0: run in the VM lane"]
fn a_cut_tail_is_named_through_the_kernel_driver() {
    let s = Setup::new();
    let mut agent = s.start();
    s.storm(5_000);
    wait_entry(s.dir(), "tpm_quote", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    agent.stop();
    assert_cut_tail_named(s.dir(), &tcti());
}
