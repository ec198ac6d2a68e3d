//! `gateway replay`: what a candidate config's breakers would have done with recorded
//! traffic (`server.record_outcomes`), compared with a baseline config's.
//!
//! - `input.rs`: reads a recording, checking every line (errors name the line).
//! - `engine.rs`: per upstream, the real `Breaker` with a clock set from the recorded
//!   timestamps, outcomes judged by the config's `failure_when` or predicate plugin.
//! - `report.rs`: the timeline and the comparison, as text or JSON.
//!
//! A recording does not contain the config that was live, only its hash: the baseline
//! is a file given with `--baseline`, checked against the recorded hashes.

mod engine;
mod input;
mod report;

use std::path::{Path, PathBuf};

pub use engine::{Step, UpstreamRun, simulate};
pub use input::{Entry, Exchanged, Recording, read};
pub use report::{Comparison, Report, UpstreamReport};

use crate::config::Config;
use crate::plugin::PluginSet;

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}:{line}: upstream `{upstream}` is not in {} (it has: {known}); replay one upstream with --upstream", path.display(), config.display())]
    UnknownUpstream {
        path: PathBuf,
        line: usize,
        upstream: String,
        config: PathBuf,
        known: String,
    },
    #[error("--upstream {upstream}: not in {} (it has: {known})", config.display())]
    NoSuchUpstream {
        upstream: String,
        config: PathBuf,
        known: String,
    },
    #[error("{}: no outcomes{}", path.display(), upstream.as_ref().map(|u| format!(" of upstream `{u}`")).unwrap_or_default())]
    Empty {
        path: PathBuf,
        upstream: Option<String>,
    },
    #[error("cannot start a runtime for plugin calls: {0}")]
    Runtime(std::io::Error),
}

/// A config to judge with, and its plugins.
pub struct Judge<'a> {
    pub config: &'a Config,
    pub plugins: &'a PluginSet,
}

/// Replays `outcomes` against `candidate` (and `baseline`), one upstream or all.
pub fn replay(
    outcomes: &Path,
    candidate: Judge<'_>,
    baseline: Option<Judge<'_>>,
    upstream: Option<&str>,
) -> Result<Report, ReplayError> {
    let configs: Vec<&Config> = std::iter::once(candidate.config)
        .chain(baseline.as_ref().map(|b| b.config))
        .collect();
    for config in &configs {
        if let Some(name) = upstream
            && !config.upstreams.contains_key(name)
        {
            return Err(ReplayError::NoSuchUpstream {
                upstream: name.to_string(),
                config: config.source.clone(),
                known: known(config),
            });
        }
    }
    // Headers, method and path are kept only where a predicate will read them.
    let predicate = |name: &str| {
        configs
            .iter()
            .any(|c| c.upstreams.get(name).is_some_and(|u| u.predicate.is_some()))
    };
    let recording = read(outcomes, upstream, &predicate)?;
    if recording.entries.is_empty() {
        return Err(ReplayError::Empty {
            path: outcomes.to_path_buf(),
            upstream: upstream.map(str::to_string),
        });
    }
    for config in &configs {
        for (name, line) in &recording.first_lines {
            if !config.upstreams.contains_key(name) {
                return Err(ReplayError::UnknownUpstream {
                    path: outcomes.to_path_buf(),
                    line: *line,
                    upstream: name.clone(),
                    config: config.source.clone(),
                    known: known(config),
                });
            }
        }
    }
    // WASI clocks are Tokio timers: plugin calls run inside a runtime, as in the proxy.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ReplayError::Runtime)?;
    let _inside = runtime.enter();
    let candidate_runs = simulate(candidate.config, candidate.plugins, &recording);
    let baseline_runs = baseline
        .as_ref()
        .map(|b| simulate(b.config, b.plugins, &recording));
    Ok(Report::new(
        outcomes,
        &recording,
        candidate.config,
        candidate_runs,
        baseline.map(|b| b.config),
        baseline_runs,
    ))
}

fn known(config: &Config) -> String {
    config
        .upstreams
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
