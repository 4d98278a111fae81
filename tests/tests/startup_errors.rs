//! Start-up problems are one clear sentence, never a raw errno.

use std::{os::unix::process::CommandExt, process::Command};

use sensor_tests::agent_bin;

fn run_agent(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run sensor-agent");
    assert!(!out.status.success(), "the agent should refuse to start");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn without_privileges_it_says_what_is_missing() {
    let state = tempfile::tempdir().expect("tempdir");
    let err = run_agent(
        Command::new(agent_bin())
            .args(["run", "--state-dir"])
            .arg(state.path())
            .uid(65534)
            .gid(65534),
    );
    assert!(err.contains("needs root"), "{err}");
    assert!(!err.contains("os error"), "{err}");
}

#[test]
fn a_config_error_names_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bad.toml");
    for (text, key) in [
        (
            "[[watch]]\npath = \"etc/shadow\"\nkind = \"password-db\"\n",
            "watch[0].path",
        ),
        ("[agent]\nring_buffer_bytes = 1000\n", "ring_buffer_bytes"),
        (
            "[agent]\nproc_files = [\"environ\", \"secrets\"]\n",
            "proc_files",
        ),
        ("[agnet]\n", "agnet"),
    ] {
        std::fs::write(&config, text).expect("write");
        let err = run_agent(
            Command::new(agent_bin())
                .arg("run")
                .arg("--config")
                .arg(&config),
        );
        assert!(
            err.contains(key),
            "error for {text:?} should name {key}: {err}"
        );
        assert!(err.lines().count() <= 2, "one clear sentence: {err}");
    }
}
