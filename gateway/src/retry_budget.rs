//! Retry budget: retries may add at most a share of recent requests (plus a small floor),
//! so that retries cannot multiply the load on an upstream that is already failing.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::breaker::{Clock, Nanos};

const SLICES: usize = 10;
const SLICE_NANOS: u64 = 1_000_000_000;

#[derive(Debug, Default)]
struct Slice {
    /// Second this slice counts, plus one (0: unused).
    second: AtomicU64,
    requests: AtomicU32,
    retries: AtomicU32,
}

/// Requests and retries over the last ten seconds.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_second: u32,
    slices: [Slice; SLICES],
}

impl RetryBudget {
    pub fn new(ratio: f64, min_per_second: u32) -> Self {
        Self {
            ratio,
            min_per_second,
            slices: Default::default(),
        }
    }

    fn slice(&self, now: Nanos) -> &Slice {
        let second = now.0 / SLICE_NANOS;
        let slice = &self.slices[(second % SLICES as u64) as usize];
        let held = slice.second.load(Ordering::Acquire);
        if held != second + 1
            && slice
                .second
                .compare_exchange(held, second + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slice.requests.store(0, Ordering::Relaxed);
            slice.retries.store(0, Ordering::Relaxed);
        }
        slice
    }

    pub fn record_request(&self, clock: &dyn Clock) {
        self.slice(clock.now())
            .requests
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget if there is one left.
    pub fn try_withdraw(&self, clock: &dyn Clock) -> bool {
        let now = clock.now();
        let second = now.0 / SLICE_NANOS;
        let oldest = (second + 1).saturating_sub(SLICES as u64);
        let (mut requests, mut retries) = (0u64, 0u64);
        for slice in &self.slices {
            let held = slice.second.load(Ordering::Acquire);
            if held > oldest && held <= second + 1 {
                requests += u64::from(slice.requests.load(Ordering::Relaxed));
                retries += u64::from(slice.retries.load(Ordering::Relaxed));
            }
        }
        let allowed =
            u64::from(self.min_per_second) * SLICES as u64 + (self.ratio * requests as f64) as u64;
        if retries >= allowed {
            return false;
        }
        self.slice(now).retries.fetch_add(1, Ordering::Relaxed);
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
