//! The built-in failure predicate: which upstream results count against an upstream.

use std::fmt;

use pingora::{Error, ErrorType};

use crate::grpc::Code;

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

/// `failure_when`: statuses, gRPC statuses and transport errors that count as failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureWhen {
    /// Inclusive ranges of status codes.
    pub statuses: Vec<(u16, u16)>,
    errors: u8,
    /// One bit per gRPC code.
    grpc: u32,
}

/// The gRPC statuses that count as failures unless `failure_when.grpc_statuses` says
/// otherwise: the server could not serve the call (not: the call was wrong).
pub const DEFAULT_GRPC_FAILURES: [Code; 4] = [
    Code::UNAVAILABLE,
    Code::DEADLINE_EXCEEDED,
    Code::RESOURCE_EXHAUSTED,
    Code::INTERNAL,
];

impl Default for FailureWhen {
    /// 5xx responses, every transport error, and the default gRPC statuses.
    fn default() -> Self {
        Self::new(
            vec![(500, 599)],
            &TransportError::ALL,
            &DEFAULT_GRPC_FAILURES,
        )
    }
}

impl FailureWhen {
    pub fn new(statuses: Vec<(u16, u16)>, errors: &[TransportError], grpc: &[Code]) -> Self {
        Self {
            statuses,
            errors: errors.iter().fold(0, |bits, e| bits | e.bit()),
            grpc: grpc.iter().fold(0, |bits, c| bits | 1 << c.value()),
        }
    }

    pub fn grpc_fails(&self, code: Code) -> bool {
        self.grpc & (1 << code.value()) != 0
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
    /// A gRPC call ended with this `grpc-status` (in its trailers, or in the head of a
    /// Trailers-Only response).
    Grpc(Code),
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
            CallResult::Grpc(code) => Some(self.grpc_fails(code)),
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
        for code in DEFAULT_GRPC_FAILURES {
            assert_eq!(rules.fails(CallResult::Grpc(code)), Some(true), "{code}");
        }
        for ok in [Code::OK, Code::new(5).unwrap_or(Code::OK)] {
            assert_eq!(rules.fails(CallResult::Grpc(ok)), Some(false), "{ok}");
        }
    }

    #[test]
    fn custom_rules_pick_statuses_and_errors() {
        let rules = FailureWhen::new(
            vec![(429, 429), (502, 504)],
            &[TransportError::ConnectRefused],
            &[Code::UNAVAILABLE],
        );
        assert_eq!(rules.fails(CallResult::Grpc(Code::UNAVAILABLE)), Some(true));
        assert_eq!(rules.fails(CallResult::Grpc(Code::INTERNAL)), Some(false));
        assert!(rules.status_fails(429));
        assert!(rules.status_fails(503));
        assert!(!rules.status_fails(500));
        assert!(rules.error_fails(TransportError::ConnectRefused));
        assert!(!rules.error_fails(TransportError::ReadTimeout));
    }
}
