//! `sensor-agent`: a thin CLI over the agent library.

fn main() -> std::process::ExitCode {
    sensor_agent::commands::main()
}
