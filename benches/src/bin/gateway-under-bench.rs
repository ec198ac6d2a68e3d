//! The gateway binary, rebuilt inside the bench package (release profile) so benches
//! drive current, optimised code.

fn main() -> std::process::ExitCode {
    gateway::cli::main()
}
