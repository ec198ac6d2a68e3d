//! At most one log line a second for something that can happen thousands of times a
//! second: a flood of slow clients, or a plugin failing on every request, must not
//! become a flood of log lines. Lock-free: it sits on paths an attacker can drive.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct ThrottledLog {
    /// Unix second of the last line written (0: none yet).
    last_second: AtomicU64,
    skipped: AtomicU64,
}

impl ThrottledLog {
    /// `Some(n)` when a line may be written now, `n` being how many were skipped since
    /// the last one; `None` to skip this one.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(crate::events::unix_ms(std::time::SystemTime::now()) / 1000)
    }

    fn admit_at(&self, second: u64) -> Option<u64> {
        if self.last_second.swap(second, Ordering::Relaxed) == second {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.skipped.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_counting_the_rest() {
        let log = ThrottledLog::default();
        assert_eq!(log.admit_at(100), Some(0));
        assert_eq!(log.admit_at(100), None);
        assert_eq!(log.admit_at(100), None);
        assert_eq!(log.admit_at(101), Some(2));
        assert_eq!(log.admit_at(101), None);
        assert_eq!(log.admit_at(105), Some(1));
    }
}
