//! Bulkhead: a cap on requests in flight to one upstream. Beyond it a request is
//! answered at once instead of queueing without bound behind a struggling upstream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Debug)]
pub struct Bulkhead {
    /// 0: no limit. Changed in place by a reload, so requests admitted under the old
    /// config still count against the new limit.
    limit: AtomicU32,
    in_flight: AtomicU32,
}

/// A place in the bulkhead, given back on drop.
#[derive(Debug)]
pub struct BulkheadSlot(Arc<Bulkhead>);

impl Bulkhead {
    pub fn new(limit: Option<u32>) -> Self {
        Self {
            limit: AtomicU32::new(limit.unwrap_or(0)),
            in_flight: AtomicU32::new(0),
        }
    }

    pub fn set_limit(&self, limit: Option<u32>) {
        self.limit.store(limit.unwrap_or(0), Ordering::Release);
    }

    /// A slot, or None when `limit` requests are already in flight.
    pub fn try_enter(self: &Arc<Self>) -> Option<BulkheadSlot> {
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        let limit = self.limit.load(Ordering::Acquire);
        if limit != 0 && now > limit {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(BulkheadSlot(Arc::clone(self)))
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }
}

impl Drop for BulkheadSlot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_frees_on_drop() {
        let b = Arc::new(Bulkhead::new(Some(2)));
        let one = b.try_enter().expect("first");
        let _two = b.try_enter().expect("second");
        assert!(b.try_enter().is_none());
        drop(one);
        assert!(b.try_enter().is_some());
        let unlimited = Arc::new(Bulkhead::new(None));
        let slots: Vec<_> = (0..1000).filter_map(|_| unlimited.try_enter()).collect();
        assert_eq!(slots.len(), 1000);
    }
}
