//! Loss is never silent: with the agent stopped and a tiny ring buffer, a storm of watched
//! opens (neither folded nor budgeted: tests/tests/flood.rs covers those) overflows the kernel
//! buffer, and the `loss` events account for every event that did not arrive.

use std::time::Duration;

use rustix::process::Signal;
use sensor_tests::{Agent, STORM};

#[test]
fn every_lost_event_is_counted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().canonicalize().expect("canonical");
    let secret = dir.join("secret");
    std::fs::write(&secret, "k").expect("write");
    let config = format!(
        "[agent]\nring_buffer_bytes = 65536\n{STORM}\n[[watch]]\npath = \"{}\"\nkind = \"ssh-key\"\n",
        secret.display()
    );
    let agent = Agent::start(&config);
    const OPENS: u64 = 5000;

    agent.signal(Signal::STOP);
    let status = sensor_tests::openloop(OPENS, &secret)
        .wait()
        .expect("openloop");
    assert!(status.success());
    agent.signal(Signal::CONT);

    // Count this storm's events, and the file_open losses, until a quiet second passes.
    let mut received = 0u64;
    let mut lost = 0u64;
    while let Some(e) = agent.try_wait_for(
        |e| {
            e["kind"] == "loss"
                || (e["kind"] == "file_open" && e["file"]["path"] == secret.to_str().unwrap_or(""))
        },
        Duration::from_secs(3),
    ) {
        if e["kind"] == "loss" {
            assert_eq!(e["loss"]["source"], "kernel_ringbuf", "{e}");
            lost += e["loss"]["counts"]["file_open"].as_u64().unwrap_or(0);
        } else {
            received += 1;
        }
    }
    assert!(
        lost > 0,
        "a 64 KiB buffer cannot hold {OPENS} events: received {received}"
    );
    assert_eq!(received + lost, OPENS, "received {received} + lost {lost}");
}
