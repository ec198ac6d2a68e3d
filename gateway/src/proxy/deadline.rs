//! A request's deadlines as the proxy phases see them.
//!
//! A route's `request_timeout` bounds a request from the end of its header to its last
//! response byte. Every wait Pingora times for it (upstream connect, reads and writes;
//! client body reads; response body writes) is given at most the time left, so the wait
//! that overruns fails at the deadline and is answered like a timeout of its kind:
//! `408` while the client is still sending its body (the call abandoned: not the
//! upstream's fault), `504` while the upstream is awaited (an upstream timeout to its
//! breaker), the connection closed once the response has started (the call abandoned).
//! Waits a per-read timeout cannot bound (bytes trickling in) are dropped a moment later
//! by the request watch (`listener/request_watch.rs`).
//!
//! HTTP/2 streams also get here what Pingora applies to HTTP/1 only: the body read
//! timeout (through the watch) and `write_timeout` per response write (a client that
//! stops granting flow-control window; HTTP/1's is the connection's, `ClientStream`).

use std::time::{Duration, Instant};

use pingora::prelude::*;
use pingora::{ErrorSource, ErrorType};

use crate::config::{ListenerLimits, RouteLimits};
use crate::limit::Limit;
use crate::listener::LimitReporter;

use super::respond::GatewayError;

#[derive(Debug, Default)]
pub struct RequestDeadline {
    /// Where the route's `request_timeout` ends; None without one.
    at: Option<Instant>,
    /// The request body is complete (or there is none): past the deadline, the wait is
    /// the upstream's or the gateway's, no longer the client's.
    body_done: bool,
    h2: bool,
    body_read_timeout: Duration,
    write_timeout: Duration,
}

impl RequestDeadline {
    /// Sets this request's timeouts on the session and arms its watch, once the route
    /// is known. `started`: when the request header was complete.
    pub fn start(
        session: &mut Session,
        listener: &ListenerLimits,
        route: &RouteLimits,
        started: Instant,
    ) -> Self {
        let h2 = session.is_http2();
        let deadline = Self {
            at: route.request_timeout.map(|t| started + t),
            body_done: session.is_body_done(),
            h2,
            body_read_timeout: route
                .body_read_timeout
                .unwrap_or(listener.body_read_timeout),
            write_timeout: listener.write_timeout,
        };
        // HTTP/1 only: Pingora ignores a read timeout on an h2 stream (the watch times it).
        session.set_read_timeout(Some(deadline.within(deadline.body_read_timeout)));
        session.set_write_timeout(deadline.write_limit());
        let h2_body = (h2 && !deadline.body_done).then_some(deadline.body_read_timeout);
        crate::listener::watch_request(deadline.at, h2_body);
        deadline
    }

    fn left(&self) -> Option<Duration> {
        self.at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// `timeout`, or the time left when that is shorter.
    fn within(&self, timeout: Duration) -> Duration {
        self.left().map_or(timeout, |left| left.min(timeout))
    }

    fn passed(&self) -> bool {
        self.at.is_some_and(|at| Instant::now() >= at)
    }

    /// Pingora's write timeout for this session: h2 streams get the listener's
    /// `write_timeout`; both get no more than the time left.
    fn write_limit(&self) -> Option<Duration> {
        if self.h2 {
            Some(self.within(self.write_timeout))
        } else {
            self.left()
        }
    }

    /// A request body chunk arrived (`end`: the last). Err: the deadline has passed
    /// (counted, and noted in `limit_hit`).
    pub fn on_body(
        &mut self,
        session: &mut Session,
        end: bool,
        overrun: Overrun<'_>,
    ) -> Result<()> {
        self.body_done |= end;
        crate::listener::body_progress(end);
        if self.at.is_none() {
            return Ok(());
        }
        if self.passed() {
            return overrun
                .fail("408: request body not complete within the route's request_timeout");
        }
        session.set_read_timeout(Some(self.within(self.body_read_timeout)));
        Ok(())
    }

    /// Gives the upstream call at most the time left. Err: none is left.
    pub fn bound_peer(&self, peer: &mut HttpPeer, overrun: Overrun<'_>) -> Result<()> {
        let Some(left) = self.left() else {
            return Ok(());
        };
        if left.is_zero() {
            return overrun.fail("504: request_timeout spent before the upstream was called");
        }
        let options = &mut peer.options;
        for timeout in [
            &mut options.connection_timeout,
            &mut options.total_connection_timeout,
            &mut options.read_timeout,
            &mut options.write_timeout,
        ] {
            *timeout = Some(timeout.map_or(left, |t| t.min(left)));
        }
        Ok(())
    }

    /// A response body chunk is about to be written. Err: the deadline has passed.
    pub fn on_response_body(&self, session: &mut Session, overrun: Overrun<'_>) -> Result<()> {
        if self.at.is_none() {
            return Ok(());
        }
        if self.passed() {
            return overrun
                .fail("connection closed: response not sent within the route's request_timeout");
        }
        session.set_write_timeout(self.write_limit());
        Ok(())
    }

    /// Which of these limits a failed request broke, from Pingora's error: counted
    /// here. Some: the client is to blame (answered by `answer`, the call abandoned);
    /// an upstream that overran the deadline is counted and left to the usual path (504,
    /// an upstream timeout).
    pub fn limit_of(&self, e: &Error, reporter: &LimitReporter) -> Option<Limit> {
        use ErrorType::*;
        let timed_out = matches!(e.etype(), ReadTimedout | WriteTimedout | ConnectTimedout);
        let downstream = e.esource() == &ErrorSource::Downstream;
        if timed_out && self.passed() {
            if !downstream {
                reporter.fired(
                    Limit::RequestTimeout,
                    "504: the upstream did not answer within the route's request_timeout",
                );
                return None;
            }
            reporter.fired(
                Limit::RequestTimeout,
                "the client did not keep up within the route's request_timeout",
            );
            return Some(Limit::RequestTimeout);
        }
        if downstream && e.etype() == &WriteTimedout {
            reporter.fired(
                Limit::WriteTimeout,
                "HTTP/2 stream closed: the client took no response bytes for write_timeout",
            );
            return Some(Limit::WriteTimeout);
        }
        None
    }

    /// What a client whose `request_timeout` passed is told (if nothing was sent yet):
    /// 408 while its own body was still coming, else 504.
    pub fn answer(&self) -> GatewayError {
        if self.body_done {
            GatewayError::UpstreamTimeout
        } else {
            GatewayError::RequestTimeout
        }
    }
}

/// Where a phase that finds the deadline passed reports it: the listener's counter,
/// and the request's `limit_hit` (so `fail_to_proxy` answers it as the client's limit).
pub struct Overrun<'a> {
    pub reporter: &'a LimitReporter,
    pub limit_hit: &'a mut Option<Limit>,
}

impl Overrun<'_> {
    fn fail(self, detail: &'static str) -> Result<()> {
        self.reporter.fired(Limit::RequestTimeout, detail);
        *self.limit_hit = Some(Limit::RequestTimeout);
        Error::e_explain(ErrorType::ReadTimedout, detail)
    }
}
