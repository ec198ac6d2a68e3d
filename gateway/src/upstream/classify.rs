//! The built-in failure predicate: which upstream results count against an upstream.

use std::fmt;

use pingora::{Error, ErrorType};

/// How an exchange with an upstream failed below HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportError {
    ConnectRefused,
    ConnectTimeout,
    ReadTimeout,
    WriteTimeout,
    ConnectionReset,
    Tls,
    Other,
}

impl TransportError {
    pub const ALL: [TransportError; 7] = [
        TransportError::ConnectRefused,
        TransportError::ConnectTimeout,
        TransportError::ReadTimeout,
        TransportError::WriteTimeout,
        TransportError::ConnectionReset,
        TransportError::Tls,
        TransportError::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TransportError::ConnectRefused => "connect_refused",
            TransportError::ConnectTimeout => "connect_timeout",
            TransportError::ReadTimeout => "read_timeout",
            TransportError::WriteTimeout => "write_timeout",
            TransportError::ConnectionReset => "connection_reset",
            TransportError::Tls => "tls",
            TransportError::Other => "other",
        }
    }

    pub fn parse(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == word)
    }

    /// The kind of a Pingora error that came from the upstream side.
    pub fn from_error(e: &Error) -> Self {
        use ErrorType::*;
        match e.etype() {
            ConnectRefused => TransportError::ConnectRefused,
            ConnectTimedout => TransportError::ConnectTimeout,
            ReadTimedout => TransportError::ReadTimeout,
            WriteTimedout => TransportError::WriteTimeout,
            ConnectionClosed | ReadError | WriteError | ConnectError | ConnectNoRoute => {
                TransportError::ConnectionReset
            }
            TLSHandshakeFailure | TLSHandshakeTimedout | InvalidCert | HandshakeError => {
                TransportError::Tls
            }
            _ => TransportError::Other,
        }
    }

    pub fn is_timeout(self) -> bool {
        matches!(
            self,
            TransportError::ConnectTimeout
                | TransportError::ReadTimeout
                | TransportError::WriteTimeout
        )
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `failure_when`: statuses and transport errors that count as failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureWhen {
    /// Inclusive ranges of status codes.
    pub statuses: Vec<(u16, u16)>,
    errors: u8,
}

impl Default for FailureWhen {
    /// 5xx responses and every transport error.
    fn default() -> Self {
        Self {
            statuses: vec![(500, 599)],
            errors: TransportError::ALL.iter().fold(0, |bits, e| bits | e.bit()),
        }
    }
}

impl FailureWhen {
    pub fn new(statuses: Vec<(u16, u16)>, errors: &[TransportError]) -> Self {
        Self {
            statuses,
            errors: errors.iter().fold(0, |bits, e| bits | e.bit()),
        }
    }

    pub fn status_fails(&self, status: u16) -> bool {
        self.statuses
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }

    pub fn error_fails(&self, error: TransportError) -> bool {
        self.errors & error.bit() != 0
    }
}

/// How one exchange with an upstream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    /// The upstream answered with this status (and the body, if any, arrived whole).
    Response(u16),
    /// The exchange failed on the wire, possibly after the status arrived.
    Transport(TransportError),
    /// The client went away or the request never reached the upstream: says nothing.
    Abandoned,
}

/// What an exchange counts as in the breaker: a failure (`Some(true)`), a success
/// (`Some(false)`) or nothing (`None`). `slow` overrides the slow-call threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Judgement {
    pub failed: Option<bool>,
    pub slow: Option<bool>,
}

impl FailureWhen {
    /// The built-in judgement: by status and transport error, latency decides slowness.
    pub fn judge(&self, result: CallResult) -> Judgement {
        Judgement {
            failed: self.fails(result),
            slow: None,
        }
    }

    pub fn fails(&self, result: CallResult) -> Option<bool> {
        match result {
            CallResult::Response(status) => Some(self.status_fails(status)),
            CallResult::Transport(error) => Some(self.error_fails(error)),
            CallResult::Abandoned => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_counts_5xx_and_every_transport_error() {
        let rules = FailureWhen::default();
        assert_eq!(rules.fails(CallResult::Response(503)), Some(true));
        assert_eq!(rules.fails(CallResult::Response(429)), Some(false));
        assert_eq!(rules.fails(CallResult::Response(200)), Some(false));
        for kind in TransportError::ALL {
            assert_eq!(
                rules.fails(CallResult::Transport(kind)),
                Some(true),
                "{kind}"
            );
        }
        assert_eq!(rules.fails(CallResult::Abandoned), None);
    }

    #[test]
    fn custom_rules_pick_statuses_and_errors() {
        let rules = FailureWhen::new(
            vec![(429, 429), (502, 504)],
            &[TransportError::ConnectRefused],
        );
        assert!(rules.status_fails(429));
        assert!(rules.status_fails(503));
        assert!(!rules.status_fails(500));
        assert!(rules.error_fails(TransportError::ConnectRefused));
        assert!(!rules.error_fails(TransportError::ReadTimeout));
    }
}
