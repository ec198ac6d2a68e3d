//! At most one log line a second for something that can happen thousands of times a
//! second (a flood of slow clients must not become a flood of log lines).

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct ThrottledLog {
    state: Mutex<(Option<Instant>, u64)>,
}

impl ThrottledLog {
    /// `Some(n)` when a line may be written now, `n` being how many were skipped since
    /// the last one; `None` to skip this one.
    pub fn admit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (last, skipped) = &mut *state;
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            *skipped += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_counting_the_rest() {
        let log = ThrottledLog::default();
        assert_eq!(log.admit(), Some(0));
        assert_eq!(log.admit(), None);
        assert_eq!(log.admit(), None);
        *log.state.lock().expect("lock") = (Some(Instant::now() - Duration::from_secs(2)), 2);
        assert_eq!(log.admit(), Some(2));
    }
}
