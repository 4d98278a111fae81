//! Probe modes (docs/probes.md "Probe modes"): each probe takes the strongest hook the
//! running kernel loads, found by loading it, never by the kernel's version; a forced mode
//! is that mode or a clear error; the start-up log and `status` name the mode of each.
//! On this project's host kernel only tracepoints load; the VM lane (`cargo xtask vm-test`)
//! runs the same tests on Debian kernels where the stronger hooks load.

use std::{
    collections::BTreeMap,
    process::Command,
    time::{Duration, Instant},
};

use sensor_tests::{agent_bin, is_root, precondition, sensorctl, Agent};

/// Strongest first, as the agent tries them.
const MODES: [&str; 4] = ["lsm", "fentry", "kprobe", "tracepoint"];
/// Probes the agent cannot run without.
const REQUIRED: [&str; 5] = ["file_open", "syscalls", "exec", "fork", "exit"];

fn strength(mode: &str) -> usize {
    MODES
        .iter()
        .position(|m| *m == mode)
        .unwrap_or_else(|| panic!("unknown mode {mode}"))
}

/// `sensor-agent probe --probe-mode MODE`: success, probe → mode, stderr.
fn probe(mode: &str) -> (bool, BTreeMap<String, String>, String) {
    let out = Command::new(agent_bin())
        .args(["probe", "--probe-mode", mode])
        .output()
        .expect("run sensor-agent probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let modes = stdout
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_owned(), w.next()?.to_owned()))
        })
        .collect();
    (
        out.status.success(),
        modes,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn auto_takes_the_strongest_hook_that_loads() {
    if !precondition(is_root(), "root (probes load into the kernel)") {
        return;
    }
    let (ok, auto, err) = probe("auto");
    assert!(ok, "auto must always find a way: {err}");
    for p in REQUIRED {
        let mode = auto
            .get(p)
            .unwrap_or_else(|| panic!("{p} missing: {auto:?}"));
        strength(mode);
    }
    // Forcing a mode gives each probe that mode or its strongest weaker way; auto tried
    // the stronger ones first, so what a forced mode attached can never beat auto's choice.
    for forced in MODES {
        let (ok, modes, err) = probe(forced);
        if ok {
            for (p, mode) in &modes {
                assert!(
                    strength(mode) >= strength(forced),
                    "--probe-mode {forced} gave {p} the stronger {mode}"
                );
                if mode != "unavailable" && auto[p] != "unavailable" {
                    assert!(
                        strength(&auto[p]) <= strength(mode),
                        "{p}: auto took {} though {mode} loads",
                        auto[p]
                    );
                }
            }
        } else {
            // Refused: one sentence naming the probe and why, and the kernel's word.
            assert!(err.contains("attaching probe "), "{forced}: {err}");
            assert!(err.contains("refused"), "{forced}: {err}");
            assert!(
                REQUIRED
                    .iter()
                    .any(|p| err.contains(&format!("probe {p}: {forced}"))
                        || err.contains(&format!("probe {p}: "))),
                "{forced}: {err}"
            );
            // ...and auto did not claim that mode for every probe that has it.
            assert!(
                auto.values().any(|m| strength(m) > strength(forced)),
                "{forced} refused yet auto reports it everywhere: {auto:?}"
            );
        }
    }
    // The tracepoint mode is complete on its own and loads everywhere.
    let (ok, modes, err) = probe("tracepoint");
    assert!(ok, "{err}");
    for p in REQUIRED {
        assert_eq!(modes[p], "tracepoint", "{modes:?}");
    }
}

#[test]
fn an_unknown_mode_is_refused_by_name() {
    let out = Command::new(agent_bin())
        .args(["run", "--probe-mode", "ebpf"])
        .output()
        .expect("run sensor-agent");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`ebpf` is not one of auto, lsm, fentry, kprobe, tracepoint"),
        "{err}"
    );
}

#[test]
fn the_start_up_log_and_status_name_each_probes_mode() {
    if !precondition(is_root(), "root (probes load into the kernel)") {
        return;
    }
    let (_, auto, err) =
        probe(&std::env::var("SENSOR_TEST_PROBE_MODE").unwrap_or_else(|_| "auto".into()));
    assert!(!auto.is_empty(), "{err}");
    let mut agent = Agent::start("");
    for p in REQUIRED {
        assert_eq!(
            agent.probe_mode(p).as_deref(),
            Some(auto[p].as_str()),
            "start-up log: {}",
            agent.stderr.lock().map(|s| s.clone()).unwrap_or_default()
        );
    }
    // status.json is written once the pipeline runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let (code, out, err) = sensorctl(&agent.state_dir, &["status"]);
        if code == 0 && out.contains("probe:") || Instant::now() > deadline {
            break format!("{out}{err}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for p in REQUIRED {
        let line = format!("probe:       {p} = {} (", auto[p]);
        assert!(status.contains(&line), "status names {p}'s mode: {status}");
    }
    agent.stop();
}
