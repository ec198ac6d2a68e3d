//! The gateway binary, rebuilt inside the test package (see Cargo.toml).

fn main() -> std::process::ExitCode {
    gateway::cli::main()
}
