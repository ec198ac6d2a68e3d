//! What an upstream has been failing with since its breaker last changed state, so a
//! transition can say "tripped on 503s" or "tripped on connect_refused".

use std::sync::atomic::{AtomicU32, Ordering};

use crate::grpc::Code;
use crate::upstream::classify::{CallResult, TransportError};

/// Counts per status code (100-599) and per transport error kind; atomics only.
#[derive(Debug)]
pub struct FailureTally {
    statuses: Box<[AtomicU32]>,
    errors: [AtomicU32; TransportError::ALL.len()],
    grpc: [AtomicU32; Code::COUNT],
}

impl Default for FailureTally {
    fn default() -> Self {
        Self {
            statuses: (100..600).map(|_| AtomicU32::new(0)).collect(),
            errors: Default::default(),
            grpc: Default::default(),
        }
    }
}

impl FailureTally {
    pub fn record(&self, result: CallResult) {
        match result {
            CallResult::Response(status) if (100..600).contains(&status) => {
                self.statuses[usize::from(status - 100)].fetch_add(1, Ordering::Relaxed);
            }
            CallResult::Grpc(code) => {
                self.grpc[usize::from(code.value())].fetch_add(1, Ordering::Relaxed);
            }
            CallResult::Transport(kind) => {
                let index = TransportError::ALL
                    .iter()
                    .position(|k| *k == kind)
                    .unwrap_or(0);
                self.errors[index].fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// The most frequent failure and its count, without starting over (a shadow
    /// transition must not take the live breaker's explanation away).
    pub fn top(&self) -> Option<(String, u32)> {
        self.most(|n| n.load(Ordering::Relaxed))
    }

    /// The most frequent failure and its count, then starts over.
    pub fn take_top(&self) -> Option<(String, u32)> {
        self.most(|n| n.swap(0, Ordering::Relaxed))
    }

    fn most(&self, read: impl Fn(&AtomicU32) -> u32) -> Option<(String, u32)> {
        let statuses = self
            .statuses
            .iter()
            .enumerate()
            .map(|(i, n)| ((i + 100).to_string(), read(n)));
        let errors = TransportError::ALL
            .iter()
            .zip(&self.errors)
            .map(|(kind, n)| (kind.as_str().to_string(), read(n)));
        let grpc = Code::all()
            .zip(&self.grpc)
            .map(|(code, n)| (format!("grpc {code}"), read(n)));
        statuses
            .chain(errors)
            .chain(grpc)
            .filter(|(_, n)| *n > 0)
            .max_by_key(|(_, n)| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_the_most_frequent_failure_and_resets() {
        let tally = FailureTally::default();
        tally.record(CallResult::Response(503));
        tally.record(CallResult::Transport(TransportError::ConnectRefused));
        tally.record(CallResult::Transport(TransportError::ConnectRefused));
        assert_eq!(tally.take_top(), Some(("connect_refused".into(), 2)));
        assert_eq!(tally.take_top(), None);
        tally.record(CallResult::Response(503));
        assert_eq!(tally.take_top(), Some(("503".into(), 1)));
    }
}
