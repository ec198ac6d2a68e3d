//! The replay's result: per upstream, the candidate's timeline and counts, the
//! baseline's, and how they differ. Printed as text for people, JSON for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::engine::{Step, UpstreamRun};
use super::input::Recording;
use crate::config::Config;
use crate::outcomes::RecordedResult;

#[derive(Debug, Serialize)]
pub struct Report {
    pub outcomes: String,
    /// Lines in the file, and those replayed (`--upstream` keeps one upstream's).
    pub lines: usize,
    pub replayed: usize,
    pub from_unix_us: u64,
    pub to_unix_us: u64,
    /// Hashes of the configs live while recording, with their line counts.
    pub recorded_configs: BTreeMap<String, u64>,
    pub candidate: ConfigUsed,
    pub baseline: Option<ConfigUsed>,
    pub upstreams: Vec<UpstreamReport>,
}

#[derive(Debug, Serialize)]
pub struct ConfigUsed {
    pub path: String,
    pub hash: String,
    /// Whether this config was live for some of the recording (same hash).
    pub live_when_recorded: bool,
}

#[derive(Debug, Serialize)]
pub struct UpstreamReport {
    pub upstream: String,
    /// Attempts the live gateway made, and requests its breaker or bulkhead refused.
    pub recorded_attempts: u64,
    pub recorded_rejected: u64,
    pub candidate: UpstreamRun,
    pub baseline: Option<UpstreamRun>,
    pub comparison: Option<Comparison>,
}

/// Candidate minus baseline.
#[derive(Debug, Serialize)]
pub struct Comparison {
    pub candidate_opens: usize,
    pub baseline_opens: usize,
    pub rejected: i64,
    pub open_seconds: f64,
}

fn opens(run: &UpstreamRun) -> usize {
    run.transitions.iter().filter(|s| s.to == "open").count()
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Report {
    pub fn new(
        outcomes: &Path,
        recording: &Recording,
        candidate: &Config,
        candidate_runs: Vec<UpstreamRun>,
        baseline: Option<&Config>,
        baseline_runs: Option<Vec<UpstreamRun>>,
    ) -> Self {
        let used = |config: &Config| ConfigUsed {
            path: config.source.display().to_string(),
            hash: config.hash.clone(),
            live_when_recorded: recording.configs.contains_key(&config.hash),
        };
        let mut baseline_runs: BTreeMap<String, UpstreamRun> = baseline_runs
            .unwrap_or_default()
            .into_iter()
            .map(|run| (run.upstream.clone(), run))
            .collect();
        let upstreams = candidate_runs
            .into_iter()
            .map(|candidate| {
                let index = recording
                    .upstreams
                    .iter()
                    .position(|u| *u == candidate.upstream);
                let of_upstream = || {
                    recording
                        .entries
                        .iter()
                        .filter(move |e| Some(e.upstream) == index)
                };
                let recorded_rejected = of_upstream()
                    .filter(|e| e.result == RecordedResult::Rejected)
                    .count() as u64;
                let recorded_attempts = of_upstream().count() as u64 - recorded_rejected;
                let baseline = baseline_runs.remove(&candidate.upstream);
                let comparison = baseline.as_ref().map(|base| Comparison {
                    candidate_opens: opens(&candidate),
                    baseline_opens: opens(base),
                    rejected: signed(candidate.rejected) - signed(base.rejected),
                    open_seconds: candidate.open_seconds - base.open_seconds,
                });
                UpstreamReport {
                    upstream: candidate.upstream.clone(),
                    recorded_attempts,
                    recorded_rejected,
                    candidate,
                    baseline,
                    comparison,
                }
            })
            .collect();
        let from_unix_us = recording.entries.first().map_or(0, |e| e.at_us);
        let to_unix_us = recording
            .entries
            .iter()
            .map(|e| e.at_us.saturating_add(e.elapsed_us))
            .max()
            .unwrap_or(from_unix_us);
        Report {
            outcomes: outcomes.display().to_string(),
            lines: recording.lines,
            replayed: recording.entries.len(),
            from_unix_us,
            to_unix_us,
            recorded_configs: recording.configs.clone(),
            candidate: used(candidate),
            baseline: baseline.map(used),
            upstreams,
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        let span = (self.to_unix_us.saturating_sub(self.from_unix_us)) as f64 / 1e6;
        let _ = writeln!(
            out,
            "Replay of {}: {} of {} outcome lines, {span:.3} s from Unix time {:.3}",
            self.outcomes,
            self.replayed,
            self.lines,
            self.from_unix_us as f64 / 1e6
        );
        let configs: Vec<String> = self
            .recorded_configs
            .iter()
            .map(|(hash, n)| format!("{hash} ({n} lines)"))
            .collect();
        let _ = writeln!(out, "Recorded under config {}", configs.join(", "));
        let describe = |label: &str, c: &ConfigUsed| {
            format!(
                "{label}{} (hash {}{})\n",
                c.path,
                c.hash,
                if c.live_when_recorded {
                    ", live when recorded"
                } else {
                    ", not the config live when recorded"
                }
            )
        };
        out.push_str(&describe("Candidate: ", &self.candidate));
        match &self.baseline {
            Some(baseline) => out.push_str(&describe("Baseline:  ", baseline)),
            None => out.push_str(
                "Baseline:  none (give --baseline with the config that was live to compare)\n",
            ),
        }
        for upstream in &self.upstreams {
            let _ = writeln!(
                out,
                "\nupstream {}: {} attempts recorded, {} refused live",
                upstream.upstream, upstream.recorded_attempts, upstream.recorded_rejected
            );
            self.run_text(&mut out, "candidate", &upstream.candidate);
            if let Some(baseline) = &upstream.baseline {
                self.run_text(&mut out, "baseline", baseline);
            }
            if let Some(c) = &upstream.comparison {
                let _ = writeln!(
                    out,
                    "  difference: candidate opens {} time(s), baseline {}; candidate rejects {:+} requests, open {:+.3} s",
                    c.candidate_opens, c.baseline_opens, c.rejected, c.open_seconds
                );
            }
        }
        out
    }

    fn run_text(&self, out: &mut String, label: &str, run: &UpstreamRun) {
        let _ = writeln!(out, "  {label}:");
        if run.transitions.is_empty() {
            let _ = writeln!(out, "    no transitions");
        }
        for step in &run.transitions {
            let at = step.at_unix_us.saturating_sub(self.from_unix_us) as f64 / 1e6;
            let _ = writeln!(
                out,
                "    +{at:.3}s  {} -> {}: {}",
                step.from,
                step.to,
                explain(step)
            );
        }
        let _ = writeln!(
            out,
            "    judged {} failures, {} successes, {} ignored; would reject {} requests ({} the live gateway sent to the upstream: {} failed there, {} succeeded), admit {} the live gateway refused (outcome unknown)",
            run.failures,
            run.successes,
            run.ignored,
            run.rejected,
            run.rejected_called_live,
            run.rejected_failures,
            run.rejected_successes,
            run.admitted_unknown
        );
        let _ = writeln!(
            out,
            "    open {:.3} s, half-open {:.3} s; ends {}",
            run.open_seconds, run.half_open_seconds, run.final_state
        );
    }
}

/// A transition in words: the reason, with the evidence the breaker gave.
fn explain(step: &Step) -> String {
    let window = format!(
        "window {} calls, {} failed ({:.1}%), {} slow; {} consecutive failures",
        step.window_calls,
        step.window_failures,
        rate(step.window_failures, step.window_calls),
        step.window_slow,
        step.consecutive_failures
    );
    let mut text = match step.reason {
        "failure_rate" | "failures_in_window" | "slow_call_rate" | "consecutive_failures" => {
            format!("tripped by {} ({window})", step.reason)
        }
        "open_period_elapsed" => "open period over, next request is a probe".to_string(),
        "probe_failed" => format!("a probe failed ({window})"),
        "probe_timed_out" => "a probe was not answered within half_open.probe_timeout".to_string(),
        "probes_succeeded" => "the probes succeeded".to_string(),
        other => other.to_string(),
    };
    if let Some(ms) = step.open_for_ms {
        let _ = write!(text, "; open for {:.3} s", ms as f64 / 1000.0);
    }
    if let Some(line) = step.line {
        let _ = write!(text, " [line {line}]");
    }
    text
}

fn rate(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        f64::from(part) * 100.0 / f64::from(whole)
    }
}
