//! Retry budget: retries may add at most a share of recent requests (plus a small floor),
//! so that retries cannot multiply the load on an upstream that is already failing.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::breaker::{Clock, Window, WindowPolicy};

/// Requests and retries over the last ten seconds, in one-second buckets: the same
/// lock-free sliding windows the breakers use.
#[derive(Debug)]
pub struct RetryBudget {
    /// The ratio's bits (f64): a reload changes it in place, keeping the history.
    ratio: AtomicU64,
    min_per_second: AtomicU32,
    requests: Window,
    retries: Window,
}

const SPAN: Duration = Duration::from_secs(10);

fn ten_seconds() -> Window {
    let buckets = NonZeroUsize::new(10).unwrap_or(NonZeroUsize::MIN);
    Window::new(WindowPolicy::Time {
        size: SPAN,
        buckets,
    })
}

impl RetryBudget {
    pub fn new(ratio: f64, min_per_second: u32) -> Self {
        Self {
            ratio: AtomicU64::new(ratio.to_bits()),
            min_per_second: AtomicU32::new(min_per_second),
            requests: ten_seconds(),
            retries: ten_seconds(),
        }
    }

    pub fn reconfigure(&self, ratio: f64, min_per_second: u32) {
        self.ratio.store(ratio.to_bits(), Ordering::Relaxed);
        self.min_per_second.store(min_per_second, Ordering::Relaxed);
    }

    pub fn record_request(&self, clock: &dyn Clock) {
        self.requests.record(clock.now(), false, false);
    }

    /// Takes one retry from the budget if there is one left.
    pub fn try_withdraw(&self, clock: &dyn Clock) -> bool {
        let now = clock.now();
        let requests = f64::from(self.requests.counts(now).calls);
        let retries = u64::from(self.retries.counts(now).calls);
        let ratio = f64::from_bits(self.ratio.load(Ordering::Relaxed));
        let min_per_second = self.min_per_second.load(Ordering::Relaxed);
        let allowed = u64::from(min_per_second) * SPAN.as_secs() + (ratio * requests) as u64;
        if retries >= allowed {
            return false;
        }
        self.retries.record(now, false, false);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::breaker::ManualClock;

    #[test]
    fn retries_are_capped_by_share_of_requests_plus_floor() {
        let clock = ManualClock::default();
        let budget = RetryBudget::new(0.2, 1);
        // Floor alone: 1 per second over 10 seconds.
        let floor = (0..100).filter(|_| budget.try_withdraw(&clock)).count();
        assert_eq!(floor, 10);
        for _ in 0..100 {
            budget.record_request(&clock);
        }
        // 20% of 100 requests on top of the floor.
        let more = (0..100).filter(|_| budget.try_withdraw(&clock)).count();
        assert_eq!(more, 20);
        // Ten seconds later the old requests and retries have left the window.
        clock.advance(Duration::from_secs(10));
        let fresh = (0..100).filter(|_| budget.try_withdraw(&clock)).count();
        assert_eq!(fresh, 10);
    }
}
