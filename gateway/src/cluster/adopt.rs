//! What a message from another instance does here. The rules (docs/OPERATIONS.md,
//! "Running a fleet"):
//!
//! - A remote **open** is adopted by a closed or half-open breaker for the rest of the
//!   sender's open period (measured from the move, so queueing and network lag do not
//!   lengthen it). A breaker that is already open keeps its own period: nothing ever
//!   extends an open period, so the fleet cannot hold itself open.
//! - Every instance **probes** on its own when its open period ends; the first whose
//!   probes succeed **closes** and says so, and an open breaker elsewhere then goes
//!   half-open at once: its own probes decide (a remote close never closes a breaker).
//! - Operator **modes and resets**: the newest (by the operator's wall-clock time) wins
//!   on every instance, including clears; ties keep what is there.
//! - An adopted move is never repeated to the fleet, so nothing echoes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use crate::breaker::{Mode, Remote, RemoteMove, State};
use crate::config::ClusterSpec;
use crate::metrics::ClusterMetrics;
use crate::operator_modes::{Override, now_unix_ms};
use crate::runtime::RuntimeHandle;

use super::wire::{Body, Message};

pub struct Fleet {
    pub spec: ClusterSpec,
    runtime: Arc<RuntimeHandle>,
    pub metrics: ClusterMetrics,
    /// Per upstream, the time of the newest operator action known here (set, clear or
    /// reset, local or remote): an older one arriving later is ignored.
    newest_action: Mutex<HashMap<String, u64>>,
}

impl Fleet {
    pub fn new(spec: ClusterSpec, runtime: Arc<RuntimeHandle>, metrics: ClusterMetrics) -> Self {
        Self {
            spec,
            runtime,
            metrics,
            newest_action: Mutex::default(),
        }
    }

    fn newest(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.newest_action.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers a local operator action's time (it is about to be sent).
    pub fn noted(&self, message: &Message) {
        if let Body::Mode {
            upstream,
            since_unix_ms,
            ..
        }
        | Body::Reset {
            upstream,
            since_unix_ms,
            ..
        } = &message.body
        {
            let mut newest = self.newest();
            let entry = newest.entry(upstream.clone()).or_default();
            *entry = (*entry).max(*since_unix_ms);
        }
    }

    /// Whether `message` should be sent at all under `share`.
    pub fn shared(&self, message: &Message) -> bool {
        match message.body {
            Body::Transition { .. } => self.spec.share_transitions,
            Body::Mode { .. } | Body::Reset { .. } => self.spec.share_modes,
            Body::SyncRequest => true,
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
                    State::Open => {
                        let remaining = open_remaining_ms.unwrap_or(0).saturating_sub(elapsed);
                        RemoteMove::Opened {
                            remaining: Duration::from_millis(remaining),
                        }
                    }
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
            } => {
                let Some(u) = upstream(name) else {
                    return false;
                };
                if !self.is_newest(name, *since_unix_ms) {
                    return false;
                }
                let value = (*mode != Mode::Automatic).then(|| Override {
                    mode: *mode,
                    since_unix_ms: *since_unix_ms,
                    by: format!("fleet:{} ({by})", message.instance),
                    token: false,
                });
                if let Err(e) = self.runtime.fleet_mode(&u, value) {
                    tracing::error!(target: "gateway::cluster", upstream = %name, error = %e, "cannot keep the fleet's mode override");
                } else {
                    tracing::warn!(target: "gateway::cluster", upstream = %name, mode = mode.as_str(), from = %message.instance, "breaker mode set by the fleet");
                }
            }
            Body::Reset {
                upstream: name,
                since_unix_ms,
                ..
            } => {
                let Some(u) = upstream(name) else {
                    return false;
                };
                if !self.is_newest(name, *since_unix_ms) {
                    return false;
                }
                if let Err(e) = self.runtime.fleet_reset(&u) {
                    tracing::error!(target: "gateway::cluster", upstream = %name, error = %e, "cannot apply the fleet's reset");
                } else {
                    tracing::warn!(target: "gateway::cluster", upstream = %name, from = %message.instance, "breaker reset by the fleet");
                }
            }
        }
        false
    }

    /// Records `since` as the newest action on `upstream` when it is newer than every
    /// one known (the override in force included).
    fn is_newest(&self, upstream: &str, since: u64) -> bool {
        let current = self
            .runtime
            .modes
            .get(upstream)
            .map_or(0, |o| o.since_unix_ms);
        let mut newest = self.newest();
        let known = newest.get(upstream).copied().unwrap_or(0).max(current);
        if since <= known {
            return false;
        }
        newest.insert(upstream.to_string(), since);
        true
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
                if view.state != State::Open || view.origin.is_some() {
                    continue;
                }
                messages.push(Message::new(
                    instance,
                    now,
                    Body::Transition {
                        upstream: name.clone(),
                        to: State::Open,
                        open_remaining_ms: view.open_remaining.map(|d| d.as_millis() as u64),
                        reason: "sync".into(),
                        window: view.window,
                    },
                ));
            }
        }
        if self.spec.share_modes {
            let overrides = self.runtime.modes.all();
            let newest = self.newest().clone();
            for name in snapshot.upstreams.keys() {
                let body = match (overrides.get(name), newest.get(name)) {
                    (Some(o), _) => Body::Mode {
                        upstream: name.clone(),
                        mode: o.mode,
                        since_unix_ms: o.since_unix_ms,
                        by: o.by.clone(),
                    },
                    (None, Some(cleared)) => Body::Mode {
                        upstream: name.clone(),
                        mode: Mode::Automatic,
                        since_unix_ms: *cleared,
                        by: String::new(),
                    },
                    (None, None) => continue,
                };
                messages.push(Message::new(instance, now, body));
            }
        }
        messages
    }
}
