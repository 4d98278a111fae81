//! The agent with test-only fault injection (`SENSOR_AGENT_FAULT=<stage>`, see
//! `sensor_agent::pipeline::fault`), for the integration tests of stage supervision. Built
//! only with the `fault-injection` feature (`cargo xtask build` does that), under its own name
//! so that it can never replace the `sensor-agent` binary that is installed.

fn main() -> std::process::ExitCode {
    sensor_agent::commands::main()
}
