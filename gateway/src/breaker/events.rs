//! Transition events: what changed, why, and what the window looked like at that moment.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::policy::TripCause;
use super::state::{Mode, State};
use super::window::WindowCounts;

/// Why a breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Tripped(TripCause),
    /// The open period ended and the next request became a probe.
    OpenPeriodElapsed,
    ProbeFailed,
    /// A probe was not recorded within `half_open.probe_timeout`: counted as failed.
    ProbeTimedOut,
    ProbesSucceeded,
    Operator(Mode),
    Reset,
    /// Another instance of the fleet made this move (`Transition::remote` says who, why).
    Adopted,
}

impl Reason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::Tripped(TripCause::ConsecutiveFailures) => "consecutive_failures",
            Reason::Tripped(TripCause::FailuresInWindow) => "failures_in_window",
            Reason::Tripped(TripCause::FailureRate) => "failure_rate",
            Reason::Tripped(TripCause::SlowCallRate) => "slow_call_rate",
            Reason::OpenPeriodElapsed => "open_period_elapsed",
            Reason::ProbeFailed => "probe_failed",
            Reason::ProbeTimedOut => "probe_timed_out",
            Reason::ProbesSucceeded => "probes_succeeded",
            Reason::Operator(_) => "operator",
            Reason::Reset => "reset",
            Reason::Adopted => "adopted",
        }
    }
}

/// One state change of one breaker.
#[derive(Debug, Clone)]
pub struct Transition {
    pub breaker: Arc<str>,
    pub from: State,
    pub to: State,
    pub reason: Reason,
    pub at: SystemTime,
    /// The window as it was when the decision was taken.
    pub window: WindowCounts,
    pub consecutive_failures: u32,
    /// For transitions to open: how long it stays open.
    pub open_for: Option<Duration>,
    /// Adopted from another instance: which, and its reason.
    pub remote: Option<Remote>,
}

/// Where an adopted transition came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub instance: Arc<str>,
    pub reason: Arc<str>,
}

/// A move another instance made, offered to this one's breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteMove {
    /// It opened, with this much of its open period left.
    Opened { remaining: Duration },
    /// It closed: its probes succeeded.
    Closed,
}

/// Receives every transition. Called outside the breaker's lock, on the thread of the
/// request that caused the change: implementations must not block.
pub trait TransitionListener: Send + Sync + std::fmt::Debug {
    fn on_transition(&self, transition: &Transition);
}

/// Drops every event.
#[derive(Debug, Default)]
pub struct NoListener;

impl TransitionListener for NoListener {
    fn on_transition(&self, _: &Transition) {}
}

/// Fans events out to any number of subscribers; a slow subscriber misses old events
/// (it sees `Lagged`) instead of slowing the request path down.
#[derive(Debug)]
pub struct Broadcast {
    sender: tokio::sync::broadcast::Sender<Arc<Transition>>,
}

impl Broadcast {
    pub fn new(capacity: usize) -> Self {
        Self {
            sender: tokio::sync::broadcast::channel(capacity.max(1)).0,
        }
    }

    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Transition>> {
        self.sender.subscribe()
    }
}

impl TransitionListener for Broadcast {
    fn on_transition(&self, transition: &Transition) {
        // No subscriber is not an error.
        let _ = self.sender.send(Arc::new(transition.clone()));
    }
}
