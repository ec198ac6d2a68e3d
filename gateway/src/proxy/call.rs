//! One request's use of one upstream: admission (breaker, bulkhead), the endpoint it
//! went to, and the outcome, recorded exactly once when the exchange ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::upstreams::peer::HttpPeer;

use crate::breaker::{Outcome, Permit, Rejected, State};
use crate::grpc::Code;
use crate::plugin::{Plugin, types};
use crate::runtime::Runtime;
use crate::upstream::bulkhead::BulkheadSlot;
use crate::upstream::classify::{CallResult, Judgement, TransportError};
use crate::upstream::{EndpointLease, Upstream};

use super::fallback::FallbackReason;

/// Why an upstream was not called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Breaker(Rejected),
    Overloaded,
}

pub struct Call {
    pub upstream: Arc<Upstream>,
    permit: Option<Permit>,
    _slot: BulkheadSlot,
    lease: Option<EndpointLease>,
    /// When the first attempt started (the endpoint was chosen).
    started: Option<Instant>,
    /// The upstream's final status, once its response head arrived.
    pub status: Option<u16>,
    /// Time to the response head: what "slow" is measured on.
    head_latency: Option<Duration>,
    /// Set when this call stands in for a rejected upstream.
    pub fallback_for: Option<(String, FallbackReason)>,
    /// Admitted as a half-open probe: its one attempt is the test, never retried.
    probe: bool,
    retries: u32,
    /// The upstream's predicate plugin, if it has one.
    pub predicate: Option<Arc<Plugin>>,
    /// The predicate's answer (or its error policy's), used instead of `failure_when`.
    pub judgement: Option<Judgement>,
    /// A body-reading predicate's view of the response (and its headers), filled as
    /// the body streams by.
    pub inspected: Option<(types::ResponseInfo, http::HeaderMap)>,
    /// Where a gRPC response stands: its status comes last, in the trailers.
    grpc: GrpcCall,
    /// When the current attempt was admitted by the breaker.
    admitted: Instant,
    /// Every recorded attempt, kept only while outcomes are recorded (`recording`).
    pub attempts: Vec<Attempt>,
    pub recording: bool,
    /// The response head's headers that `record_outcomes.headers` names.
    pub response_headers: crate::outcomes::HeaderList,
}

/// One attempt as the breaker recorded it, for the outcome recording.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    pub result: CallResult,
    pub latency: Duration,
    pub endpoint: Option<std::net::SocketAddr>,
    pub admitted: Instant,
    pub finished: Instant,
    /// The live judgement: failure, success, or nothing.
    pub failed: Option<bool>,
}

/// A gRPC exchange is judged on its `grpc-status`, not on its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GrpcCall {
    /// Not a gRPC response (or no response yet).
    No,
    /// A gRPC response whose status has not arrived yet.
    AwaitingTrailers,
    /// Its status: from the trailers, or from the head of a Trailers-Only response.
    Ended(Code),
}

impl Call {
    /// Asks the upstream's breaker, then its bulkhead. Nothing touches the network here.
    pub fn admit(upstream: &Arc<Upstream>, runtime: &Runtime) -> Result<Call, Rejection> {
        // With gated recovery, an open breaker waits for a passing health check.
        if upstream.breaker.state() == State::Open && !upstream.may_probe() {
            let retry_after = upstream
                .spec
                .health_check
                .as_ref()
                .map_or(Duration::ZERO, |h| h.interval);
            upstream.metrics.rejected.inc();
            return Err(Rejection::Breaker(Rejected {
                state: State::Open,
                retry_after,
            }));
        }
        let permit = upstream.breaker.try_acquire().map_err(|rejected| {
            upstream.metrics.rejected.inc();
            Rejection::Breaker(rejected)
        })?;
        let slot = upstream.bulkhead.try_enter().ok_or_else(|| {
            upstream.metrics.overloaded.inc();
            Rejection::Overloaded
        })?;
        upstream.retry_budget.record_request(&*upstream.clock);
        Ok(Call {
            probe: permit.is_probe(),
            retries: 0,
            upstream: Arc::clone(upstream),
            permit: Some(permit),
            _slot: slot,
            lease: None,
            started: None,
            status: None,
            head_latency: None,
            fallback_for: None,
            predicate: upstream
                .spec
                .predicate
                .as_deref()
                .and_then(|name| runtime.plugins.get(name))
                .cloned(),
            judgement: None,
            inspected: None,
            grpc: GrpcCall::No,
            admitted: Instant::now(),
            attempts: Vec::new(),
            recording: false,
            response_headers: Vec::new(),
        })
    }

    /// Leases an endpoint (avoiding the one that just failed) and returns its peer.
    pub fn peer(&mut self) -> Box<HttpPeer> {
        let avoid = self.lease.as_ref().map(EndpointLease::index);
        let lease = self.upstream.lease(avoid);
        let peer = lease.peer();
        self.lease = Some(lease);
        self.started.get_or_insert_with(Instant::now);
        peer
    }

    pub fn endpoint(&self) -> Option<std::net::SocketAddr> {
        self.lease.as_ref().map(|l| l.endpoint().addr)
    }

    /// The upstream's response head arrived.
    /// A gRPC response head arrived (HTTP 200, a gRPC content type): its status is in
    /// it (Trailers-Only) or will come in the trailers.
    pub fn on_grpc_head(&mut self, status: Option<Code>) {
        self.grpc = status.map_or(GrpcCall::AwaitingTrailers, GrpcCall::Ended);
    }

    /// The trailers of a gRPC response arrived.
    pub fn on_grpc_trailers(&mut self, status: Code) {
        if self.grpc == GrpcCall::AwaitingTrailers {
            self.grpc = GrpcCall::Ended(status);
        }
    }

    /// Whether a gRPC answer's status is known (a Trailers-Only head, or trailers).
    pub fn grpc_ended(&self) -> bool {
        matches!(self.grpc, GrpcCall::Ended(_))
    }

    /// Whether the outcome waits for the trailers (the body has ended without them).
    pub fn awaits_trailers(&self) -> bool {
        self.grpc == GrpcCall::AwaitingTrailers
    }

    /// How the exchange ended, given the error it ended with (if any): an upstream
    /// error, the gRPC status, the HTTP status, or nothing (the client went away before
    /// the answer was complete). A gRPC response that ended without its status is
    /// INTERNAL, as gRPC clients read it.
    pub fn result(&self, e: Option<&pingora::Error>) -> CallResult {
        let upstream_error = e
            .filter(|e| e.esource() == &pingora::ErrorSource::Upstream)
            .map(TransportError::from_error);
        match (upstream_error, e.is_some(), self.grpc, self.status) {
            (_, _, GrpcCall::Ended(code), _) => CallResult::Grpc(code),
            (Some(error), ..) => CallResult::Transport(error),
            (None, true, GrpcCall::AwaitingTrailers, _) => CallResult::Abandoned,
            (None, false, GrpcCall::AwaitingTrailers, _) => CallResult::Grpc(Code::INTERNAL),
            (None, _, GrpcCall::No, Some(status)) => CallResult::Response(status),
            (None, _, GrpcCall::No, None) => CallResult::Abandoned,
        }
    }

    pub fn on_response(&mut self, status: u16) {
        self.status = Some(status);
        self.head_latency = self.started.map(|s| s.elapsed());
    }

    /// After a failed connect (already recorded): whether to try another endpoint.
    /// Only idempotent requests, never a half-open probe, only while the breaker is
    /// closed, within `retries.attempts` and the retry budget; the retry is admitted by
    /// the breaker like any call, so every attempt is recorded exactly once.
    pub fn retry_connect(&mut self, idempotent: bool) -> bool {
        let upstream = &self.upstream;
        if !(self.may_retry(idempotent) && upstream.retry_budget.try_withdraw(&*upstream.clock)) {
            return false;
        }
        match upstream.breaker.try_acquire() {
            Ok(permit) if !permit.is_probe() => {
                self.permit = Some(permit);
                self.admitted = Instant::now();
                self.retries += 1;
                upstream.metrics.retries.inc();
                true
            }
            _ => false,
        }
    }

    /// Whether a failed connect could be retried, budget aside.
    pub fn may_retry(&self, idempotent: bool) -> bool {
        let upstream = &self.upstream;
        idempotent
            && !self.probe
            && self.retries < upstream.spec.retries.attempts
            && upstream.endpoints.len() > 1
            && upstream.breaker.state() == State::Closed
    }

    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Time to the response head, or so far when there is none.
    pub fn latency(&self) -> Duration {
        self.head_latency
            .or_else(|| self.started.map(|s| s.elapsed()))
            .unwrap_or_default()
    }

    /// Whether the outcome is still to be recorded.
    pub fn is_open(&self) -> bool {
        self.permit.is_some()
    }

    /// Records how the exchange ended: into the breaker (once) and outlier detection.
    /// The predicate's judgement, when there is one, decides; else `failure_when`.
    pub fn finish(&mut self, result: CallResult) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let latency = self.latency();
        let judgement = self
            .judgement
            .take()
            .unwrap_or_else(|| self.upstream.spec.failure_when.judge(result));
        let failed = judgement.failed;
        let metrics = &self.upstream.metrics;
        if let CallResult::Grpc(code) = result {
            metrics.grpc_status(code);
        }
        let mut outcome = match failed {
            Some(true) => {
                metrics.failure.inc();
                self.upstream.failures.record(result);
                Outcome::failure(latency)
            }
            Some(false) => {
                metrics.success.inc();
                Outcome::success(latency)
            }
            None => {
                metrics.ignored.inc();
                Outcome::ignored()
            }
        };
        outcome.slow = judgement.slow;
        if failed.is_some() {
            metrics.duration.observe(latency.as_secs_f64());
        }
        if self.recording {
            self.attempts.push(Attempt {
                result,
                latency,
                endpoint: self.endpoint(),
                admitted: self.admitted,
                finished: Instant::now(),
                failed,
            });
        }
        let counted = self.upstream.breaker.record(permit, outcome);
        if let Some(shadow) = &self.upstream.shadow {
            shadow.observe(outcome);
        }
        if counted {
            crate::handover::forward(&self.upstream, outcome);
        }
        if let (Some(lease), Some(failed)) = (&self.lease, failed) {
            self.upstream.report(lease.index(), failed);
        }
    }
}
