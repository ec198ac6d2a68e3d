//! Command line: `gateway run | check | alerts | replay | demo`. Parsing and reporting only.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, LoadError};
use crate::logging::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "gateway",
    version,
    about = "Edge reverse proxy with a circuit breaker in front of every upstream"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "pretty")]
    log_format: LogFormat,
    /// Log level filter (RUST_LOG overrides it).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve traffic with the given config.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Take the listening sockets from the running gateway (send it SIGQUIT) instead
        /// of binding them: a binary or listener change with no refused connection.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a config file: print a summary, or every error with file:line:column.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print Prometheus alert rules with thresholds from each upstream's breaker settings.
    Alerts {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Replay recorded outcomes (`server.record_outcomes`) through a candidate config's
    /// breakers: each transition with its reason, requests it would have rejected, time
    /// open, compared with a baseline config.
    Replay {
        /// The candidate config.
        #[arg(long, short)]
        config: PathBuf,
        /// The recording (JSON lines).
        #[arg(long)]
        outcomes: PathBuf,
        /// The config to compare with (the one live when recorded, usually).
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// Replay this upstream only.
        #[arg(long)]
        upstream: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: ReplayFormat,
    },
    /// Start simulated upstreams with fault injection and the gateway in front of them.
    Demo,
    /// Internal: compile the component on stdin into the plugin cache (a child of
    /// `run` or `check`, so that compilation's memory leaves with it).
    #[command(name = "compile-plugin", hide = true)]
    CompilePlugin {
        #[arg(long)]
        cache_dir: PathBuf,
        #[arg(long)]
        key: String,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ReplayFormat {
    Text,
    Json,
}

/// Entry point shared by the `gateway` binary and the test suite's copy of it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Alerts { config } => match config::load(&config) {
            Ok(config) => {
                print!("{}", crate::alerts::rules(&config));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{}", report(&e));
                ExitCode::from(2)
            }
        },
        Command::Run { config, upgrade } => {
            logging::init(cli.log_format, &cli.log_level);
            match config::load(&config) {
                Ok(loaded) => crate::server::run(loaded, Some(config), upgrade),
                Err(e) => {
                    eprint!("{}", report(&e));
                    ExitCode::from(2)
                }
            }
        }
        Command::Replay {
            config,
            outcomes,
            baseline,
            upstream,
            format,
        } => {
            logging::init(cli.log_format, &cli.log_level);
            replay(
                &config,
                &outcomes,
                baseline.as_deref(),
                upstream.as_deref(),
                format,
            )
        }
        Command::Demo => {
            logging::init(cli.log_format, &cli.log_level);
            crate::demo::run()
        }
        Command::CompilePlugin { cache_dir, key } => crate::plugin::compile_child(&cache_dir, &key),
    }
}

/// A config with its plugins loaded, as `run` would (exit code 2 when it cannot load).
fn load_with_plugins(
    path: &std::path::Path,
) -> Result<(config::Config, crate::plugin::PluginSet), ExitCode> {
    let loaded = config::load(path).and_then(|config| {
        let metrics = crate::metrics::Metrics::default();
        let plugins = crate::plugin::PluginSet::load(&config, None, &metrics)?;
        Ok((config, plugins))
    });
    loaded.map_err(|e| {
        eprint!("{}", report(&e));
        ExitCode::from(2)
    })
}

/// Exit codes: 0 replayed, 1 the recording cannot be replayed, 2 a config is invalid.
fn replay(
    candidate: &std::path::Path,
    outcomes: &std::path::Path,
    baseline: Option<&std::path::Path>,
    upstream: Option<&str>,
    format: ReplayFormat,
) -> ExitCode {
    let candidate = match load_with_plugins(candidate) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let baseline = match baseline.map(load_with_plugins).transpose() {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    match crate::replay::replay(
        outcomes,
        judge(&candidate),
        baseline.as_ref().map(judge),
        upstream,
    ) {
        Ok(report) => {
            match format {
                ReplayFormat::Text => print!("{}", report.text()),
                ReplayFormat::Json => println!("{}", report.json()),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

fn judge(
    (config, plugins): &(config::Config, crate::plugin::PluginSet),
) -> crate::replay::Judge<'_> {
    crate::replay::Judge { config, plugins }
}

fn report(e: &LoadError) -> String {
    match e {
        LoadError::Invalid(errors) => errors.to_string(),
        other => format!("{other}\n"),
    }
}

/// Everything `run` would check before serving, plugins loaded and initialised included.
fn check(path: &std::path::Path) -> ExitCode {
    let loaded = config::load(path).and_then(|config| {
        let metrics = crate::metrics::Metrics::default();
        crate::plugin::PluginSet::load(&config, None, &metrics)?;
        Ok(config)
    });
    match loaded {
        Ok(config) => {
            println!(
                "{}: ok (hash {}): {} listener(s), {} plugin(s), {} upstream(s), {} route(s)",
                path.display(),
                config.hash,
                config.listeners.len(),
                config.plugins.len(),
                config.upstreams.len(),
                config.routes.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("{}", report(&e));
            ExitCode::from(2)
        }
    }
}
