//! Sliding windows of recent outcomes, recorded with atomics only.
//!
//! A window is never cleared in place: the breaker swaps in a fresh one, so a record
//! racing a reset lands wholly in the old window or wholly in the new one.

use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::clock::Nanos;
use super::policy::WindowPolicy;

/// Counts of the calls a window currently holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct WindowCounts {
    pub calls: u32,
    pub failures: u32,
    pub slow: u32,
}

impl WindowCounts {
    /// Saturating: counts handed over by another process are not trusted to be small.
    fn plus(self, other: WindowCounts) -> WindowCounts {
        WindowCounts {
            calls: self.calls.saturating_add(other.calls),
            failures: self.failures.saturating_add(other.failures),
            slow: self.slow.saturating_add(other.slow),
        }
    }

    pub fn failure_rate(&self) -> f64 {
        ratio(self.failures, self.calls)
    }

    pub fn slow_rate(&self) -> f64 {
        ratio(self.slow, self.calls)
    }
}

fn ratio(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        f64::from(part) / f64::from(whole)
    }
}

#[derive(Debug)]
pub enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    pub fn new(policy: WindowPolicy) -> Self {
        match policy {
            WindowPolicy::Count { size } => Window::Count(CountWindow::new(size.get())),
            WindowPolicy::Time { size, buckets } => {
                Window::Time(TimeWindow::new(size, buckets.get()))
            }
        }
    }

    pub fn record(&self, now: Nanos, failure: bool, slow: bool) {
        match self {
            Window::Count(w) => w.record(failure, slow),
            Window::Time(w) => w.record(now, failure, slow),
        }
    }

    pub fn counts(&self, now: Nanos) -> WindowCounts {
        match self {
            Window::Count(w) => w.counts(),
            Window::Time(w) => w.counts(now),
        }
    }

    /// What the window holds at `now`, in a form independent of its clock.
    pub fn contents(&self, now: Nanos) -> WindowContents {
        match self {
            Window::Count(w) => WindowContents::Calls(w.calls_oldest_first()),
            Window::Time(w) => WindowContents::Slices(w.slices(now)),
        }
    }

    /// A window of `policy`'s shape holding what `contents` can give it at `now`: calls
    /// in order into a count window (the oldest dropped when it is smaller), slices by
    /// their age into a time window (re-bucketed; those older than it dropped). Calls
    /// without a time cannot be placed in a time window: they are dropped.
    pub fn restore(policy: WindowPolicy, contents: &WindowContents, now: Nanos) -> Restored {
        let window = Window::new(policy);
        let held = contents.calls();
        match (&window, contents) {
            (Window::Count(w), WindowContents::Calls(calls)) => {
                let kept = &calls[calls.len().saturating_sub(w.slots.len())..];
                for call in kept {
                    w.record(call.failed, call.slow);
                }
            }
            (Window::Count(w), WindowContents::Slices(slices)) => {
                // The newest calls that fit, newest slice first (the contents may come
                // from another process: never more than the window holds), then
                // recorded oldest first. Within a slice the order is unknown.
                let calls: Vec<Call> = slices
                    .iter()
                    .flat_map(|s| s.counts.as_calls())
                    .take(w.slots.len())
                    .collect();
                for call in calls.iter().rev() {
                    w.record(call.failed, call.slow);
                }
            }
            (Window::Time(w), WindowContents::Slices(slices)) => {
                for slice in slices {
                    w.add(now, slice.age, slice.counts);
                }
            }
            (Window::Time(_), WindowContents::Calls(_)) => {}
        }
        let kept = window.counts(now).calls;
        Restored {
            window,
            kept,
            dropped: held.saturating_sub(kept),
        }
    }
}

/// A window rebuilt from another's contents, and how many calls made it across.
#[derive(Debug)]
pub struct Restored {
    pub window: Window,
    pub kept: u32,
    pub dropped: u32,
}

/// One call a count window remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Call {
    pub failed: bool,
    pub slow: bool,
}

/// The counts of one slice of a time window, and how long ago the slice began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Slice {
    pub age: Duration,
    pub counts: WindowCounts,
}

/// A window's contents, to carry across a reload that changes its shape or into another
/// process.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowContents {
    /// Oldest first.
    Calls(Vec<Call>),
    /// Newest first.
    Slices(Vec<Slice>),
}

impl WindowContents {
    pub fn calls(&self) -> u32 {
        match self {
            WindowContents::Calls(calls) => u32::try_from(calls.len()).unwrap_or(u32::MAX),
            WindowContents::Slices(slices) => slices
                .iter()
                .fold(0u32, |sum, s| sum.saturating_add(s.counts.calls)),
        }
    }
}

impl WindowCounts {
    /// Calls with these counts, failed and slow ones spread evenly (a time slice does
    /// not remember the order), so that keeping part of a slice keeps its rates.
    fn as_calls(self) -> impl Iterator<Item = Call> {
        let share = move |part: u32, i: u32| {
            let (part, i, calls) = (u64::from(part), u64::from(i), u64::from(self.calls));
            // Whether the running share of `part` crosses a whole call at call `i`.
            (i + 1) * part / calls > i * part / calls
        };
        (0..self.calls).map(move |i| Call {
            failed: share(self.failures.min(self.calls), i),
            slow: share(self.slow.min(self.calls), i),
        })
    }
}

const PRESENT: u8 = 1;
const FAILED: u8 = 2;
const SLOW: u8 = 4;

/// The last N calls: a ring of outcome codes plus running totals.
#[derive(Debug)]
pub struct CountWindow {
    slots: Box<[AtomicU8]>,
    next: AtomicU64,
    calls: AtomicI64,
    failures: AtomicI64,
    slow: AtomicI64,
}

impl CountWindow {
    fn new(size: usize) -> Self {
        Self {
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            next: AtomicU64::new(0),
            calls: AtomicI64::new(0),
            failures: AtomicI64::new(0),
            slow: AtomicI64::new(0),
        }
    }

    fn record(&self, failure: bool, slow: bool) {
        let code = PRESENT | if failure { FAILED } else { 0 } | if slow { SLOW } else { 0 };
        let len = self.slots.len() as u64;
        let index = (self.next.fetch_add(1, Ordering::Relaxed) % len) as usize;
        let old = self.slots[index].swap(code, Ordering::AcqRel);
        // Totals move by the difference between the evicted outcome and the new one.
        let delta = |bit: u8| i64::from(code & bit != 0) - i64::from(old & bit != 0);
        for (total, bit) in [
            (&self.calls, PRESENT),
            (&self.failures, FAILED),
            (&self.slow, SLOW),
        ] {
            let d = delta(bit);
            if d != 0 {
                total.fetch_add(d, Ordering::Relaxed);
            }
        }
    }

    fn calls_oldest_first(&self) -> Vec<Call> {
        let len = self.slots.len();
        let next = (self.next.load(Ordering::Acquire) % len as u64) as usize;
        (0..len)
            .map(|k| self.slots[(next + k) % len].load(Ordering::Acquire))
            .filter(|code| code & PRESENT != 0)
            .map(|code| Call {
                failed: code & FAILED != 0,
                slow: code & SLOW != 0,
            })
            .collect()
    }

    fn counts(&self) -> WindowCounts {
        // Concurrent records can leave a total briefly behind its slots; never below zero.
        let read =
            |t: &AtomicI64| u32::try_from(t.load(Ordering::Relaxed).max(0)).unwrap_or(u32::MAX);
        WindowCounts {
            calls: read(&self.calls),
            failures: read(&self.failures),
            slow: read(&self.slow),
        }
    }
}

/// Counters one group of threads writes, alone on its cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Shard {
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

/// Threads spread over this many shards per bucket, so that two cores recording at
/// once do not fight over one cache line.
const SHARDS: usize = 8;

fn shard_index() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

#[derive(Debug, Default)]
struct Bucket {
    /// Which time slice this bucket holds, plus one (0: never used).
    slice: AtomicU64,
    shards: [Shard; SHARDS],
}

impl Bucket {
    fn clear(&self) {
        for shard in &self.shards {
            shard.calls.store(0, Ordering::Relaxed);
            shard.failures.store(0, Ordering::Relaxed);
            shard.slow.store(0, Ordering::Relaxed);
        }
    }

    fn counts(&self) -> WindowCounts {
        self.shards
            .iter()
            .fold(WindowCounts::default(), |sum, shard| {
                sum.plus(WindowCounts {
                    calls: shard.calls.load(Ordering::Relaxed),
                    failures: shard.failures.load(Ordering::Relaxed),
                    slow: shard.slow.load(Ordering::Relaxed),
                })
            })
    }
}

/// Calls in the last `size`: a ring of buckets, each one slice of time.
#[derive(Debug)]
pub struct TimeWindow {
    buckets: Box<[Bucket]>,
    slice_nanos: u64,
}

impl TimeWindow {
    fn new(size: Duration, buckets: usize) -> Self {
        let slice = (size.as_nanos() / buckets as u128).max(1);
        Self {
            buckets: (0..buckets).map(|_| Bucket::default()).collect(),
            slice_nanos: u64::try_from(slice).unwrap_or(u64::MAX),
        }
    }

    fn slice(&self, now: Nanos) -> u64 {
        now.0 / self.slice_nanos
    }

    fn record(&self, now: Nanos, failure: bool, slow: bool) {
        let slice = self.slice(now);
        let bucket = &self.buckets[(slice % self.buckets.len() as u64) as usize];
        let current = bucket.slice.load(Ordering::Acquire);
        if current != slice + 1
            && bucket
                .slice
                .compare_exchange(current, slice + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // This bucket held an expired slice: start it over. A record racing this
            // rotation may be lost; windows are statistics, not ledgers.
            bucket.clear();
        }
        let shard = &bucket.shards[shard_index()];
        shard.calls.fetch_add(1, Ordering::Relaxed);
        if failure {
            shard.failures.fetch_add(1, Ordering::Relaxed);
        }
        if slow {
            shard.slow.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The slices inside the window at `now`, newest first.
    fn slices(&self, now: Nanos) -> Vec<Slice> {
        let slice = self.slice(now);
        let oldest = (slice + 1).saturating_sub(self.buckets.len() as u64);
        let mut held: Vec<(u64, WindowCounts)> = self
            .buckets
            .iter()
            .filter_map(|bucket| {
                let id = bucket.slice.load(Ordering::Acquire).checked_sub(1)?;
                (oldest..=slice)
                    .contains(&id)
                    .then(|| (id, bucket.counts()))
            })
            .filter(|(_, counts)| counts.calls > 0)
            .collect();
        held.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
        held.into_iter()
            .map(|(id, counts)| Slice {
                // From the slice's start: a restore places it no later than it was.
                age: Duration::from_nanos(now.0.saturating_sub(id * self.slice_nanos)),
                counts,
            })
            .collect()
    }

    /// Adds `counts` to the slice that held the time `age` before `now` (nothing when
    /// that is outside the window).
    fn add(&self, now: Nanos, age: Duration, counts: WindowCounts) {
        let age = u64::try_from(age.as_nanos()).unwrap_or(u64::MAX);
        let Some(at) = now.0.checked_sub(age) else {
            return;
        };
        let (slice, current) = (self.slice(Nanos(at)), self.slice(now));
        if current - slice >= self.buckets.len() as u64 {
            return;
        }
        let bucket = &self.buckets[(slice % self.buckets.len() as u64) as usize];
        if bucket.slice.swap(slice + 1, Ordering::AcqRel) != slice + 1 {
            bucket.clear();
        }
        // Stored, not added: each slice of the contents lands in its own bucket here,
        // or several into one when this window's slices are longer.
        let shard = &bucket.shards[0];
        let held = WindowCounts {
            calls: shard.calls.load(Ordering::Relaxed),
            failures: shard.failures.load(Ordering::Relaxed),
            slow: shard.slow.load(Ordering::Relaxed),
        }
        .plus(WindowCounts {
            calls: counts.calls,
            failures: counts.failures.min(counts.calls),
            slow: counts.slow.min(counts.calls),
        });
        shard.calls.store(held.calls, Ordering::Relaxed);
        shard.failures.store(held.failures, Ordering::Relaxed);
        shard.slow.store(held.slow, Ordering::Relaxed);
    }

    fn counts(&self, now: Nanos) -> WindowCounts {
        let slice = self.slice(now);
        let oldest = (slice + 1).saturating_sub(self.buckets.len() as u64);
        let mut counts = WindowCounts::default();
        for bucket in self.buckets.iter() {
            let held = bucket.slice.load(Ordering::Acquire);
            // Only slices inside the window count; a bucket from a later slice cannot exist.
            if held == 0 || held - 1 < oldest || held - 1 > slice {
                continue;
            }
            counts = counts.plus(bucket.counts());
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use super::*;

    fn nz(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
    }

    #[test]
    fn count_window_keeps_only_the_last_n_calls() {
        let w = Window::new(WindowPolicy::Count { size: nz(3) });
        let t = Nanos(0);
        w.record(t, true, false);
        w.record(t, true, true);
        assert_eq!(
            w.counts(t),
            WindowCounts {
                calls: 2,
                failures: 2,
                slow: 1
            }
        );
        w.record(t, false, false);
        w.record(t, false, false); // evicts the first failure
        assert_eq!(
            w.counts(t),
            WindowCounts {
                calls: 3,
                failures: 1,
                slow: 1
            }
        );
        w.record(t, false, false); // evicts the slow failure
        assert_eq!(
            w.counts(t),
            WindowCounts {
                calls: 3,
                failures: 0,
                slow: 0
            }
        );
    }

    #[test]
    fn time_window_expires_whole_buckets() {
        let sec = |s: u64| Nanos(s * 1_000_000_000);
        let w = Window::new(WindowPolicy::Time {
            size: Duration::from_secs(10),
            buckets: nz(5),
        });
        w.record(sec(0), true, false); // bucket [0s, 2s)
        w.record(sec(3), false, true); // bucket [2s, 4s)
        assert_eq!(
            w.counts(sec(9)),
            WindowCounts {
                calls: 2,
                failures: 1,
                slow: 1
            }
        );
        // At 10s the window is [2s, 12s): the first bucket has expired.
        assert_eq!(
            w.counts(sec(10)),
            WindowCounts {
                calls: 1,
                failures: 0,
                slow: 1
            }
        );
        // Recording at 12s reuses the expired ring position of slice [2s, 4s).
        w.record(sec(12), true, false);
        assert_eq!(
            w.counts(sec(12)),
            WindowCounts {
                calls: 1,
                failures: 1,
                slow: 0
            }
        );
        assert_eq!(w.counts(sec(100)), WindowCounts::default());
    }

    #[test]
    fn rates_are_zero_without_calls() {
        assert_eq!(WindowCounts::default().failure_rate(), 0.0);
        let c = WindowCounts {
            calls: 4,
            failures: 1,
            slow: 2,
        };
        assert_eq!(c.failure_rate(), 0.25);
        assert_eq!(c.slow_rate(), 0.5);
    }
}
