//! One request's use of one upstream: admission (breaker, bulkhead), the endpoint it
//! went to, and the outcome, recorded exactly once when the exchange ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::upstreams::peer::HttpPeer;

use crate::breaker::{Outcome, Permit, Rejected};
use crate::bulkhead::BulkheadSlot;
use crate::classify::CallResult;
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
}

impl Call {
    /// Asks the upstream's breaker, then its bulkhead. Nothing touches the network here.
    pub fn admit(upstream: &Arc<Upstream>) -> Result<Call, Rejection> {
        let permit = upstream.breaker.try_acquire().map_err(Rejection::Breaker)?;
        let slot = upstream.bulkhead.try_enter().ok_or(Rejection::Overloaded)?;
        Ok(Call {
            upstream: Arc::clone(upstream),
            permit: Some(permit),
            _slot: slot,
            lease: None,
            started: None,
            status: None,
            head_latency: None,
            fallback_for: None,
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

    pub fn is_probe(&self) -> bool {
        self.permit.as_ref().is_some_and(Permit::is_probe)
    }

    /// The upstream's response head arrived.
    pub fn on_response(&mut self, status: u16) {
        self.status = Some(status);
        self.head_latency = self.started.map(|s| s.elapsed());
    }

    /// Records how the exchange ended: into the breaker (once) and outlier detection.
    pub fn finish(&mut self, result: CallResult) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let latency = self
            .head_latency
            .or_else(|| self.started.map(|s| s.elapsed()))
            .unwrap_or_default();
        let failed = self.upstream.spec.failure_when.fails(result);
        let outcome = match failed {
            Some(true) => Outcome::failure(latency),
            Some(false) => Outcome::success(latency),
            None => Outcome::ignored(),
        };
        self.upstream.breaker.record(permit, outcome);
        if let (Some(lease), Some(failed)) = (&self.lease, failed) {
            self.upstream.report(lease.index(), failed);
        }
    }
}
