//! Counts requests in flight so that a SIGTERM can wait for them, and no longer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
}

/// Held by a request for its whole life.
#[derive(Debug)]
pub struct InFlightGuard(Arc<InFlight>);

impl InFlight {
    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(Arc::clone(self))
    }

    pub fn current(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Blocks until no request has been in flight for `quiet` (a connection accepted
    /// just before the listener closed gets its request read in that time), or until
    /// `limit` passes; true when drained.
    pub fn wait_idle(&self, quiet: Duration, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut idle_since: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if self.current() > 0 {
                idle_since = None;
            } else if now.duration_since(*idle_since.get_or_insert(now)) >= quiet {
                return true;
            }
            if now >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::Release);
    }
}
