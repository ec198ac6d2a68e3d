//! The `gateway` binary: all of it lives in the library so tests run the same code.

fn main() -> std::process::ExitCode {
    gateway::cli::main()
}
