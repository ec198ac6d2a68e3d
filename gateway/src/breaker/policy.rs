//! What a breaker decides by: checked settings, built from the `breaker:` config block.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use super::window::WindowCounts;

/// How recent calls are remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowPolicy {
    /// The last `size` calls.
    Count { size: NonZeroUsize },
    /// Calls in the last `size`, kept in `buckets` slices that expire one at a time.
    Time {
        size: Duration,
        buckets: NonZeroUsize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowCallPolicy {
    /// A call at least this slow is slow.
    pub duration: Duration,
    /// Trip when this share of the window's calls were slow (0 < rate <= 1).
    pub rate: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// Each consecutive re-open multiplies the open duration by this (>= 1).
    pub multiplier: f64,
    /// Open duration never exceeds this.
    pub max: Duration,
    /// Up to this share of the duration is taken off at random (0 <= jitter < 1), so many
    /// gateways do not probe a recovering upstream at the same instant; never above `max`.
    pub jitter: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HalfOpenPolicy {
    /// Probes admitted per half-open period (and so at most this many at once).
    pub permitted_requests: NonZeroU32,
    /// Successful probes needed to close; at most `permitted_requests`.
    pub success_threshold: NonZeroU32,
    /// A probe not recorded within this time counts as failed and gives its place back:
    /// a probe stuck on a hung upstream or a slow client cannot hold the breaker
    /// half-open (and every other call rejected) for longer.
    pub probe_timeout: Duration,
}

/// Every trip condition is optional; any one that holds opens the breaker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerPolicy {
    pub window: WindowPolicy,
    /// Rate conditions are evaluated only once the window holds this many calls.
    pub minimum_requests: NonZeroU32,
    pub failure_rate: Option<f64>,
    pub consecutive_failures: Option<NonZeroU32>,
    /// Open once the window holds this many failures, whatever the other calls (what
    /// breaker services call a failure threshold); `minimum_requests` does not apply.
    pub failures_in_window: Option<NonZeroU32>,
    pub slow_call: Option<SlowCallPolicy>,
    pub open_duration: Duration,
    pub backoff: Option<BackoffPolicy>,
    pub half_open: HalfOpenPolicy,
}

/// Why a breaker tripped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TripCause {
    ConsecutiveFailures,
    FailuresInWindow,
    FailureRate,
    SlowCallRate,
}

impl Default for BreakerPolicy {
    /// Open when half the calls of the last 30 s failed (once 20 were made), for 10 s.
    fn default() -> Self {
        Self {
            window: WindowPolicy::Time {
                size: Duration::from_secs(30),
                buckets: NonZeroUsize::new(10).unwrap_or(NonZeroUsize::MIN),
            },
            minimum_requests: NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN),
            failure_rate: Some(0.5),
            consecutive_failures: None,
            failures_in_window: None,
            slow_call: None,
            open_duration: Duration::from_secs(10),
            backoff: None,
            half_open: HalfOpenPolicy {
                permitted_requests: NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN),
                success_threshold: NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN),
                probe_timeout: Duration::from_secs(30),
            },
        }
    }
}

impl BreakerPolicy {
    pub fn is_slow(&self, latency: Duration) -> bool {
        self.slow_call.is_some_and(|s| latency >= s.duration)
    }

    /// Whether a closed breaker with these counts must open, and why.
    pub fn trip_cause(&self, counts: WindowCounts, consecutive_failures: u32) -> Option<TripCause> {
        if self
            .consecutive_failures
            .is_some_and(|n| consecutive_failures >= n.get())
        {
            return Some(TripCause::ConsecutiveFailures);
        }
        if self
            .failures_in_window
            .is_some_and(|n| counts.failures >= n.get())
        {
            return Some(TripCause::FailuresInWindow);
        }
        if counts.calls < self.minimum_requests.get() || counts.calls == 0 {
            return None;
        }
        let calls = f64::from(counts.calls);
        if self
            .failure_rate
            .is_some_and(|rate| f64::from(counts.failures) / calls >= rate)
        {
            return Some(TripCause::FailureRate);
        }
        if self
            .slow_call
            .is_some_and(|slow| f64::from(counts.slow) / calls >= slow.rate)
        {
            return Some(TripCause::SlowCallRate);
        }
        None
    }

    /// How long to stay open after the `reopens`-th consecutive re-open (0 = first trip).
    /// `entropy` is any value in [0, 1) and spreads the jitter.
    pub fn open_duration(&self, reopens: u32, entropy: f64) -> Duration {
        let Some(backoff) = self.backoff else {
            return self.open_duration;
        };
        let exponent = i32::try_from(reopens).unwrap_or(i32::MAX);
        let grown = self.open_duration.as_secs_f64() * backoff.multiplier.powi(exponent);
        let capped = grown.min(backoff.max.as_secs_f64());
        Duration::from_secs_f64(capped * (1.0 - backoff.jitter * entropy.clamp(0.0, 1.0)))
    }
}
