//! The agent never runs blind: a pipeline stage that ends is noticed. A closed stdout only
//! stops the output (the log goes on); any other stage failing stops the agent in order with
//! a non-zero exit, an ERROR line naming the stage, and a `stage_<name>` loss event in the
//! log (except for the chain stage, which is the log's writer: the next epoch then says the
//! previous one crashed).

use std::{path::Path, time::Duration};

use sensor_tests::{events, openloop, secret_in, sensorctl, trigger, Agent, Start, Stdout, STORM};
use serde_json::Value;

/// Whether the log holds `pid`'s open of /etc/shadow.
fn logged_shadow_read(dir: &Path, pid: u32) -> bool {
    let (code, out, err) = sensorctl(dir, &["events", "--json", "--pid", &pid.to_string()]);
    assert_eq!(code, 0, "sensorctl events: {err}");
    out.lines().any(|l| {
        let e: Value = serde_json::from_str(l).expect("JSON line");
        e["kind"] == "file_open" && e["file"]["path"] == "/etc/shadow"
    })
}

fn verify(dir: &Path) {
    let (code, out, err) = sensorctl(dir, &["verify"]);
    assert_eq!(code, 0, "sensorctl verify: {out}{err}");
}

fn read_shadow() -> u32 {
    trigger(&["open", "/etc/shadow"]).0
}

#[test]
fn a_closed_stdout_stops_the_output_but_not_the_log() {
    let state = tempfile::tempdir().expect("state");
    // The reader of `--output json` reads one line and closes the pipe, as `| head -1` does.
    let mut agent = Agent::start_opts(
        "",
        state.path(),
        &Start {
            stdout: Stdout::CloseAfter(1),
            ..Start::default()
        },
    );
    let first = read_shadow();
    assert!(
        agent
            .try_wait_for(|_| true, Duration::from_secs(15))
            .is_some(),
        "no first line (pid {first} read /etc/shadow)"
    );
    // Events written to the closed pipe fail with EPIPE; give the output time to meet it.
    for _ in 0..3 {
        read_shadow();
        std::thread::sleep(Duration::from_millis(500));
    }

    let later = read_shadow();
    let logged = (0..150).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        logged_shadow_read(state.path(), later)
    });
    assert!(
        logged,
        "a read of /etc/shadow after stdout closed is not in the log:\n{}",
        agent.stderr.lock().expect("lock")
    );
    assert!(agent.wait_exit(Duration::ZERO).is_none(), "the agent ended");
    assert_eq!(
        agent.log_lines("WARN", "the output stopped"),
        1,
        "one warning about the output:\n{}",
        agent.stderr.lock().expect("lock")
    );
    // status.json is rewritten every 2 s.
    let output = || {
        let status: Value = serde_json::from_slice(
            &std::fs::read(state.path().join("status.json")).expect("status.json"),
        )
        .expect("status JSON");
        status["output"].as_str().unwrap_or_default().to_owned()
    };
    let stopped = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        output().starts_with("stopped:")
    });
    assert!(stopped && output().contains("Broken pipe"), "{}", output());

    agent.stop();
    verify(state.path());
    // Events the output could not write are in the log: not counted as lost.
    let losses = events(state.path(), "loss");
    assert!(
        !losses.iter().any(|e| e["loss"]["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("stage_"))),
        "{losses:?}"
    );
}

/// A reader of stdout that stops reading (a stalled pipeline, a stopped pager) must not
/// stall the log: the output misses copies, counted and announced on stdout, and the log
/// goes on.
#[test]
fn a_stalled_stdout_reader_does_not_stall_the_log() {
    let files = tempfile::tempdir().expect("tempdir");
    let secret = secret_in(files.path());
    let config = format!(
        "[agent]\n{STORM}\n[[watch]]\npath = \"{}\"\nkind = \"ssh-key\"\n",
        secret.display()
    );
    let state = tempfile::tempdir().expect("state");
    let agent = Agent::start_opts(
        &config,
        state.path(),
        &Start {
            stdout: Stdout::Held,
            ..Start::default()
        },
    );
    // Far more than the pipe, the output's buffer and its queue of 256 batches hold.
    assert!(openloop(200_000, &secret)
        .wait()
        .expect("openloop")
        .success());
    // Reads right after the storm may find the ring buffer still full (counted kernel
    // losses); one read within 30 s must reach the log. With the old code none ever did.
    let logged = (0..30).any(|_| {
        let later = read_shadow();
        (0..10).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            logged_shadow_read(state.path(), later)
        })
    });
    assert!(
        logged,
        "with stdout unread, no read of /etc/shadow reached the log:\n{}",
        agent.stderr.lock().expect("lock")
    );
    assert!(
        agent.log_lines("WARN", "the reader of stdout is too slow") > 0,
        "{}",
        agent.stderr.lock().expect("lock")
    );

    // Once stdout is read again, the stream says what it missed.
    agent.read_stdout();
    std::thread::sleep(Duration::from_secs(1));
    read_shadow();
    let missed = agent
        .try_wait_for(
            |e| e["kind"] == "loss" && e["loss"]["source"] == "output",
            Duration::from_secs(30),
        )
        .expect("a loss event of source output on stdout");
    assert!(
        missed["loss"]["counts"]["file_open"].as_u64() > Some(0),
        "{missed}"
    );
    // status.json is rewritten every 2 s.
    let counted = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        let status: Value = serde_json::from_slice(
            &std::fs::read(state.path().join("status.json")).expect("status.json"),
        )
        .expect("status JSON");
        status["output_missed"].as_u64() > Some(0)
    });
    assert!(counted, "status.json counts the missed copies");
    // That event is the output's: the log holds the events and no such loss.
    assert!(!events(state.path(), "loss")
        .iter()
        .any(|e| e["loss"]["source"] == "output"));
}

/// Starts the fault-injection build with `stage` failing once the agent is ready (no real
/// fault of these stages can be provoked from outside the process), gives the stage an event
/// to handle, and checks that the agent stopped in order: a non-zero exit in bounded time,
/// an ERROR line naming the stage, a clean stop of the log, and a log that verifies.
fn stage_failure_stops_the_agent(stage: &str) -> tempfile::TempDir {
    let state = tempfile::tempdir().expect("state");
    let mut agent = Agent::start_opts(
        "",
        state.path(),
        &Start {
            fault: Some(stage),
            ..Start::default()
        },
    );
    read_shadow();
    let status = agent.wait_exit(Duration::from_secs(20));
    let status = status.unwrap_or_else(|| {
        panic!(
            "the agent still runs:\n{}",
            agent.stderr.lock().expect("lock")
        )
    });
    // Its last words, once the reader of its stderr has caught up.
    let last = format!("sensor-agent: the {stage} stage of the pipeline failed");
    let mut stderr = String::new();
    for _ in 0..50 {
        stderr = agent.stderr.lock().expect("lock").clone();
        if stderr.contains(&last) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!status.success(), "exit {status}:\n{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("ERROR") && l.contains(&format!("the {stage} stage ended"))),
        "no ERROR line naming the {stage} stage:\n{stderr}"
    );
    // The process, and with it every probe and map it held, is gone, after saying why.
    assert!(
        stderr.lines().last().is_some_and(|l| l.starts_with(&last)),
        "{stderr}"
    );
    verify(state.path());
    state
}

/// The `stage_<name>` loss events in the log.
fn stage_losses(dir: &Path, stage: &str) -> usize {
    events(dir, "loss")
        .iter()
        .filter(|e| e["loss"]["source"] == format!("stage_{stage}"))
        .count()
}

/// How the newest epoch says the one before it ended (`CleanStop` after the chain stage's
/// clean close, `Crash` without it).
fn previous_epoch_end(dir: &Path) -> String {
    events(dir, "epoch_start")
        .iter()
        .max_by_key(|e| e["epoch"].as_u64())
        .and_then(|e| e["reason"].as_str().map(str::to_owned))
        .expect("an epoch start")
}

/// Restarts the production agent on `dir` and stops it, so its epoch start tells how the
/// previous epoch ended.
fn restart(dir: &Path) {
    Agent::start_at("", dir, &[]).stop();
}

#[test]
fn a_failing_reader_stops_the_agent_and_is_chained() {
    let state = stage_failure_stops_the_agent("read");
    assert_eq!(stage_losses(state.path(), "read"), 1);
    // The table says the amount is unknown rather than "lost 0".
    let (_, table, _) = sensorctl(state.path(), &["events", "--kind", "loss"]);
    assert!(
        table.contains("lost an unknown number from stage_read"),
        "{table}"
    );
    restart(state.path());
    assert_eq!(previous_epoch_end(state.path()), "CleanStop");
}

#[test]
fn a_failing_loss_stage_stops_the_agent_and_is_chained() {
    let state = stage_failure_stops_the_agent("loss");
    assert_eq!(stage_losses(state.path(), "loss"), 1);
    restart(state.path());
    assert_eq!(previous_epoch_end(state.path()), "CleanStop");
}

#[test]
fn a_panicking_enrich_thread_stops_the_agent_and_is_chained() {
    let state = stage_failure_stops_the_agent("enrich");
    assert_eq!(stage_losses(state.path(), "enrich"), 1);
    restart(state.path());
    assert_eq!(previous_epoch_end(state.path()), "CleanStop");
}

/// The watched-set refresh thread ending (an inotify error) would leave new and replaced
/// credential files unwatched.
#[test]
fn a_dead_watched_set_refresh_stops_the_agent_and_is_chained() {
    let state = stage_failure_stops_the_agent("watch");
    assert_eq!(stage_losses(state.path(), "watch"), 1);
    restart(state.path());
    assert_eq!(previous_epoch_end(state.path()), "CleanStop");
}

/// The chain stage is the log's writer: it cannot record its own end, and it cannot write
/// the clean-stop marker, so the next epoch says the previous one crashed.
#[test]
fn a_panicking_chain_stage_stops_the_agent_and_the_next_epoch_says_crash() {
    let state = stage_failure_stops_the_agent("chain");
    assert_eq!(stage_losses(state.path(), "chain"), 0);
    restart(state.path());
    assert_eq!(previous_epoch_end(state.path()), "Crash");
    verify(state.path());
}
