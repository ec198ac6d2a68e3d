//! What a message from another instance does here. The rules (docs/OPERATIONS.md,
//! "Running a fleet"):
//!
//! - A remote **open** is adopted by a closed or half-open breaker for the rest of the
//!   sender's open period (measured from the move, so queueing and network lag do not
//!   lengthen it), when the sender tripped on traffic (not when its probe failed: one
//!   instance whose own path to the upstream is broken must not hold healthy ones
//!   open, cycle after cycle). A breaker that is already open keeps its own period: nothing ever
//!   extends an open period, so the fleet cannot hold itself open.
//! - Every instance **probes** on its own when its open period ends; the first whose
//!   probes succeed **closes** and says so, and an open breaker elsewhere then goes
//!   half-open at once: its own probes decide (a remote close never closes a breaker).
//! - Operator **modes and resets**: the newest action wins on every instance, clears
//!   included, by its stamp (`operator_modes::Stamp`: the time it was taken, never before
//!   an action known there, then the instance's name), kept with the overrides so a
//!   restart or a reconnection does not forget a clear; a stamp more than a minute
//!   ahead of the local clock is refused and counted.
//! - An adopted move is never repeated to the fleet, so nothing echoes.

use std::sync::Arc;
use std::time::Duration;

use crate::breaker::{Mode, Remote, RemoteMove, State};
use crate::config::ClusterSpec;
use crate::metrics::ClusterMetrics;
use crate::operator_modes::{Override, Remote as Applied, Stamp, StateError, now_unix_ms};
use crate::runtime::RuntimeHandle;

use super::wire::{Body, Message};

/// The reasons of an open that tripped on traffic, the only opens adopted.
const TRIPS: [&str; 4] = [
    "consecutive_failures",
    "failures_in_window",
    "failure_rate",
    "slow_call_rate",
];

pub struct Fleet {
    pub spec: ClusterSpec,
    runtime: Arc<RuntimeHandle>,
    pub metrics: ClusterMetrics,
}

impl Fleet {
    pub fn new(spec: ClusterSpec, runtime: Arc<RuntimeHandle>, metrics: ClusterMetrics) -> Self {
        runtime.modes.set_instance(&spec.instance);
        Self {
            spec,
            runtime,
            metrics,
        }
    }

    /// Whether `message` should be sent at all under `share`.
    pub fn shared(&self, message: &Message) -> bool {
        match message.body {
            Body::Transition { .. } => self.spec.share_transitions,
            Body::Mode { .. } | Body::Reset { .. } => self.spec.share_modes,
            Body::SyncRequest | Body::Heartbeat => true,
        }
    }

    /// Applies another instance's message. Returns whether it asks for a sync.
    pub fn apply(&self, message: &Message) -> bool {
        if message.instance == self.spec.instance || !self.shared(message) {
            return false;
        }
        let snapshot = self.runtime.snapshot();
        let upstream = |name: &str| snapshot.upstreams.get(name).cloned();
        match &message.body {
            Body::SyncRequest => return true,
            Body::Heartbeat => {}
            Body::Transition {
                upstream: name,
                to,
                open_remaining_ms,
                reason,
                ..
            } => {
                let Some(u) = upstream(name) else {
                    return false;
                };
                let now = now_unix_ms();
                let elapsed = now.saturating_sub(message.at_unix_ms);
                let remote_move = match to {
                    State::Open if !TRIPS.contains(&reason.as_str()) => return false,
                    State::Open => {
                        let remaining = open_remaining_ms.unwrap_or(0).saturating_sub(elapsed);
                        if remaining == 0 {
                            // Over by the time it arrived (or the clocks disagree by
                            // more than the period): nothing to adopt.
                            self.metrics.dropped.inc();
                            return false;
                        }
                        RemoteMove::Opened {
                            remaining: Duration::from_millis(remaining),
                        }
                    }
                    // With gated recovery, ending the open period early would let probes
                    // past a health check that has not passed.
                    State::Closed if !u.may_probe() => return false,
                    State::Closed => RemoteMove::Closed,
                    _ => return false,
                };
                let remote = Remote {
                    instance: message.instance.as_str().into(),
                    reason: reason.as_str().into(),
                };
                if u.breaker.adopt_remote(remote_move, remote) {
                    self.metrics.lag.observe(elapsed as f64 / 1000.0);
                }
            }
            Body::Mode {
                upstream: name,
                mode,
                since_unix_ms,
                by,
                origin,
            } => {
                let Some(u) = upstream(name) else {
                    return false;
                };
                let value = (*mode != Mode::Automatic).then(|| Override {
                    mode: *mode,
                    since_unix_ms: *since_unix_ms,
                    by: format!("fleet:{} ({by})", message.instance),
                    token: false,
                });
                let stamp = stamp(message, *since_unix_ms, origin);
                let result = self.runtime.fleet_mode(&u, value, stamp);
                self.report(name, "mode set", &message.instance, result);
            }
            Body::Reset {
                upstream: name,
                since_unix_ms,
                origin,
                ..
            } => {
                let Some(u) = upstream(name) else {
                    return false;
                };
                let stamp = stamp(message, *since_unix_ms, origin);
                let result = self.runtime.fleet_reset(&u, stamp);
                self.report(name, "reset", &message.instance, result);
            }
        }
        false
    }

    /// Logs (and counts) what became of another instance's operator action.
    fn report(&self, upstream: &str, what: &str, from: &str, result: Result<Applied, StateError>) {
        match result {
            Ok(Applied::Applied) => {
                tracing::warn!(target: "gateway::cluster", upstream, from, "breaker {what} by the fleet");
            }
            Ok(Applied::Stale) => {}
            Ok(Applied::FromTheFuture) => {
                self.metrics.dropped.inc();
                tracing::warn!(target: "gateway::cluster", upstream, from, "fleet action stamped more than a minute ahead of this clock: ignored (check NTP)");
            }
            Err(e) => {
                tracing::error!(target: "gateway::cluster", upstream, from, error = %e, "cannot keep the fleet's action");
            }
        }
    }

    /// What this instance holds, for an instance that (re)connected: its own open
    /// breakers with the time they have left, its overrides, and the clears it knows of.
    pub fn sync(&self) -> Vec<Message> {
        let now = now_unix_ms();
        let instance = &self.spec.instance;
        let snapshot = self.runtime.snapshot();
        let mut messages = Vec::new();
        if self.spec.share_transitions {
            for (name, u) in &snapshot.upstreams {
                let view = u.breaker.snapshot();
                // Only its own opens that tripped on traffic: what a receiver adopts.
                let tripped = view.entered_by.is_some_and(|r| TRIPS.contains(&r.as_str()));
                if view.state != State::Open || view.origin.is_some() || !tripped {
                    continue;
                }
                messages.push(Message::new(
                    instance,
                    now,
                    Body::Transition {
                        upstream: name.clone(),
                        to: State::Open,
                        open_remaining_ms: view.open_remaining.map(|d| d.as_millis() as u64),
                        reason: view.entered_by.map_or("sync", |r| r.as_str()).into(),
                        window: view.window,
                    },
                ));
            }
        }
        if self.spec.share_modes {
            // Every action known here (its own or adopted), with the stamp it carries:
            // set as the override in force, cleared (or reset) as `automatic`.
            let overrides = self.runtime.modes.all();
            for (name, stamp) in self.runtime.modes.actions() {
                if !snapshot.upstreams.contains_key(&name) {
                    continue;
                }
                let (mode, by) = overrides
                    .get(&name)
                    .map_or((Mode::Automatic, String::new()), |o| (o.mode, o.by.clone()));
                messages.push(Message::new(
                    instance,
                    now,
                    Body::Mode {
                        upstream: name,
                        mode,
                        since_unix_ms: stamp.at_ms,
                        by,
                        origin: Some(stamp.instance),
                    },
                ));
            }
        }
        messages
    }
}

/// The stamp of an operator action in `message`: its time and the instance where it was
/// taken (`origin` when the sender relays another's in a sync).
fn stamp(message: &Message, since_unix_ms: u64, origin: &Option<String>) -> Stamp {
    Stamp {
        at_ms: since_unix_ms,
        instance: origin.clone().unwrap_or_else(|| message.instance.clone()),
    }
}
