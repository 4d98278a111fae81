//! Test-only fault injection: with the `fault-injection` feature, `SENSOR_AGENT_FAULT=<stage>`
//! (`read`, `loss`, `enrich`, `chain` or `watch`) makes that stage fail at its first chance
//! after the agent is ready, so the tests can check that a failing stage stops the agent in
//! order and leaves a record. It exists because no real fault of these stages can be
//! provoked from outside the process. Without the feature (the installed `sensor-agent`),
//! [`fails`] is a constant `false` and the variable is never read.

/// Allows the faults from now on (called once the agent is ready, so that a test sees a
/// started agent fail rather than a start-up error).
pub fn arm() {
    #[cfg(feature = "fault-injection")]
    {
        tracing::warn!(
            fault = ?std::env::var("SENSOR_AGENT_FAULT").ok(),
            "this is the fault-injection test build: never deploy it"
        );
        imp::ARMED.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether `stage` must fail now.
#[inline(always)]
pub fn fails(stage: &str) -> bool {
    #[cfg(feature = "fault-injection")]
    {
        imp::fails(stage)
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = stage;
        false
    }
}

/// The error an injected stage failure returns.
pub fn injected(stage: &str) -> crate::Error {
    crate::Error::Io(std::io::Error::other(format!(
        "fault injected into the {stage} stage (test build)"
    )))
}

#[cfg(feature = "fault-injection")]
mod imp {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        OnceLock,
    };

    pub static ARMED: AtomicBool = AtomicBool::new(false);
    static STAGE: OnceLock<Option<String>> = OnceLock::new();

    pub fn fails(stage: &str) -> bool {
        ARMED.load(Ordering::Relaxed)
            && STAGE
                .get_or_init(|| std::env::var("SENSOR_AGENT_FAULT").ok())
                .as_deref()
                == Some(stage)
    }
}
