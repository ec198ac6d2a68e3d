//! Upstream pools: endpoints, load balancing, outlier ejection, and the resilience
//! state every request to the pool goes through (breaker, bulkhead).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pingora::upstreams::peer::HttpPeer;

use crate::breaker::{Breaker, Clock, Nanos};
use crate::bulkhead::Bulkhead;
use crate::config::{LoadBalancing, OutlierSpec, Protocol, UpstreamSpec};
use crate::events::{EventHub, UpstreamEvents};
use crate::failure_tally::FailureTally;
use crate::metrics::UpstreamMetrics;
use crate::retry_budget::RetryBudget;

/// One address of a pool.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Requests currently sent to this endpoint (least-requests balancing).
    in_flight: AtomicUsize,
    /// Connection template: cloning it is cheaper than building one per request.
    peer: HttpPeer,
    consecutive_failures: AtomicU32,
    /// Clock time until which the endpoint gets no traffic (0: not ejected).
    ejected_until: AtomicU64,
    /// Ejections in a row; each one lasts longer. Reset by a success after returning.
    ejections: AtomicU32,
    /// Active health: true until health checks say otherwise.
    healthy: AtomicBool,
    /// Consecutive health-check results in the same direction.
    health_streak: AtomicU32,
}

impl Endpoint {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }
}

/// A named pool of endpoints.
#[derive(Debug)]
pub struct Upstream {
    pub spec: UpstreamSpec,
    pub endpoints: Vec<Endpoint>,
    pub breaker: Arc<Breaker>,
    pub bulkhead: Arc<Bulkhead>,
    pub retry_budget: RetryBudget,
    pub metrics: UpstreamMetrics,
    /// What calls failed with since the breaker's last transition.
    pub failures: Arc<FailureTally>,
    next: AtomicUsize,
    pub clock: Arc<dyn Clock>,
    pub events: Arc<EventHub>,
    /// Serializes ejection decisions so the pool-share cap holds.
    ejecting: Mutex<()>,
}

impl Upstream {
    pub fn new(spec: UpstreamSpec, clock: Arc<dyn Clock>, events: Arc<EventHub>) -> Self {
        let endpoints = spec
            .endpoints
            .iter()
            .map(|addr| {
                let tls = spec.tls.as_ref();
                // Without a name (only allowed with `verify: false`), the address: rustls
                // needs a server name, and sends no SNI for an IP.
                let sni = tls.map_or_else(String::new, |t| {
                    if t.server_name.is_empty() {
                        addr.ip().to_string()
                    } else {
                        t.server_name.clone()
                    }
                });
                let mut peer = HttpPeer::new(*addr, tls.is_some(), sni);
                if let Some(tls) = tls {
                    peer.options.verify_cert = tls.verify;
                    peer.options.verify_hostname = tls.verify;
                    peer.options.ca = tls.ca.as_ref().map(|ca| Arc::clone(&ca.certificates));
                }
                // Pingora pools connections by address and SNI, not by CA bundle: keep
                // each upstream's pool its own so a connection verified under one
                // upstream's trust settings never serves another's.
                peer.group_key = pool_group(&spec.name);
                if spec.protocol == Protocol::Http2 {
                    // Over TLS, ALPN h2 only; in plaintext, h2c with prior knowledge.
                    peer.options.set_http_version(2, 2);
                }
                let t = spec.timeouts;
                peer.options.connection_timeout = Some(t.connect);
                peer.options.read_timeout = Some(t.read);
                peer.options.write_timeout = Some(t.write);
                peer.options.idle_timeout = Some(t.idle);
                Endpoint {
                    addr: *addr,
                    in_flight: AtomicUsize::new(0),
                    peer,
                    consecutive_failures: AtomicU32::new(0),
                    ejected_until: AtomicU64::new(0),
                    ejections: AtomicU32::new(0),
                    healthy: AtomicBool::new(true),
                    health_streak: AtomicU32::new(0),
                }
            })
            .collect();
        let failures = Arc::new(FailureTally::default());
        let listener = Arc::new(UpstreamEvents {
            hub: Arc::clone(&events),
            failures: Arc::clone(&failures),
        });
        let breaker = Arc::new(Breaker::new(
            spec.name.as_str(),
            spec.breaker,
            Arc::clone(&clock),
            listener,
        ));
        let bulkhead = Arc::new(Bulkhead::new(spec.max_concurrent_requests.map(|n| n.get())));
        let retry_budget = RetryBudget::new(
            spec.retries.budget_ratio,
            spec.retries.budget_min_per_second,
        );
        let metrics = events.metrics.for_upstream(&spec.name);
        Self {
            metrics,
            failures,
            spec,
            endpoints,
            breaker,
            bulkhead,
            retry_budget,
            next: AtomicUsize::new(0),
            clock,
            events,
            ejecting: Mutex::new(()),
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    fn available(&self, index: usize, now: Nanos) -> bool {
        let endpoint = &self.endpoints[index];
        endpoint.ejected_until.load(Ordering::Acquire) <= now.0 && endpoint.is_healthy()
    }

    /// Whether an open breaker may let probes through: always, unless health checks
    /// gate it and no endpoint currently passes them.
    pub fn may_probe(&self) -> bool {
        match &self.spec.health_check {
            Some(check) if check.gate_breaker => self.endpoints.iter().any(Endpoint::is_healthy),
            _ => true,
        }
    }

    /// Feeds one health-check result for endpoint `index`; returns the new health when
    /// it changed.
    pub fn report_health(&self, index: usize, passed: bool) -> Option<bool> {
        let check = self.spec.health_check.as_ref()?;
        let endpoint = &self.endpoints[index];
        let healthy = endpoint.is_healthy();
        if passed == healthy {
            endpoint.health_streak.store(0, Ordering::Release);
            return None;
        }
        let streak = endpoint.health_streak.fetch_add(1, Ordering::AcqRel) + 1;
        let needed = if passed {
            check.healthy_threshold
        } else {
            check.unhealthy_threshold
        };
        if streak < needed.get() {
            return None;
        }
        endpoint.health_streak.store(0, Ordering::Release);
        endpoint.healthy.store(passed, Ordering::Release);
        self.events
            .endpoint_health(self.name(), endpoint.addr, passed);
        Some(passed)
    }

    /// Endpoints currently ejected.
    pub fn ejected(&self) -> impl Iterator<Item = &Endpoint> {
        let now = self.clock.now();
        self.endpoints
            .iter()
            .filter(move |e| e.ejected_until.load(Ordering::Acquire) > now.0)
    }

    /// Chooses an endpoint, skipping ejected ones (unless every one is), and counts the
    /// request against it until the lease drops. `avoid` is an endpoint that just failed.
    pub fn lease(self: &Arc<Self>, avoid: Option<usize>) -> EndpointLease {
        let count = self.endpoints.len();
        let now = self.clock.now();
        let usable = |i: usize| self.available(i, now) && (count == 1 || Some(i) != avoid);
        let index = match (avoid, self.spec.load_balancing) {
            // A retry takes the next usable endpoint after the one that failed, without
            // moving the shared rotation (which would skew first attempts).
            (Some(failed), _) => (1..=count)
                .map(|k| (failed + k) % count)
                .find(|i| usable(*i))
                .unwrap_or((failed + 1) % count),
            (None, LoadBalancing::RoundRobin) => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..count)
                    .map(|k| (start + k) % count)
                    .find(|i| usable(*i))
                    .unwrap_or(start % count)
            }
            (None, LoadBalancing::LeastRequests) => {
                // Power of two random choices among usable endpoints.
                let pick = |seed: usize| {
                    (0..count)
                        .map(|k| (seed + k) % count)
                        .find(|i| usable(*i))
                        .unwrap_or(seed % count)
                };
                let a = pick(rand::random::<usize>());
                // A second, different choice when there is one.
                let b = match count {
                    1 => a,
                    _ => Some(pick(a + 1 + rand::random::<usize>() % (count - 1)))
                        .filter(|b| usable(*b))
                        .unwrap_or(a),
                };
                let load = |i: usize| self.endpoints[i].in_flight.load(Ordering::Relaxed);
                if load(b) < load(a) { b } else { a }
            }
        };
        self.endpoints[index]
            .in_flight
            .fetch_add(1, Ordering::Relaxed);
        EndpointLease {
            upstream: Arc::clone(self),
            index,
        }
    }

    /// Feeds outlier detection with the result of one call to endpoint `index`.
    pub fn report(&self, index: usize, failed: bool) {
        let Some(spec) = self.spec.outlier_detection else {
            return;
        };
        let endpoint = &self.endpoints[index];
        if !failed {
            if endpoint.consecutive_failures.load(Ordering::Relaxed) != 0 {
                endpoint.consecutive_failures.store(0, Ordering::Relaxed);
            }
            if endpoint.ejections.load(Ordering::Relaxed) != 0
                && self.available(index, self.clock.now())
            {
                endpoint.ejections.store(0, Ordering::Relaxed);
            }
            return;
        }
        let failures = endpoint.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures >= spec.consecutive_failures.get() {
            self.try_eject(index, spec, failures);
        }
    }

    fn try_eject(&self, index: usize, spec: OutlierSpec, failures: u32) {
        let _decide = self.ejecting.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.clock.now();
        let endpoint = &self.endpoints[index];
        if !self.available(index, now) {
            return; // already ejected
        }
        let ejected = (0..self.endpoints.len())
            .filter(|i| !self.available(*i, now))
            .count();
        let allowed = self.endpoints.len() * usize::from(spec.max_ejection_percent) / 100;
        if ejected + 1 > allowed {
            return; // ejecting more would leave too little of the pool
        }
        let repeats = endpoint.ejections.fetch_add(1, Ordering::AcqRel);
        let factor = 1u32.checked_shl(repeats.min(16)).unwrap_or(u32::MAX);
        let period = spec.ejection.saturating_mul(factor).min(spec.max_ejection);
        endpoint
            .ejected_until
            .store(now.after(period).0, Ordering::Release);
        endpoint.consecutive_failures.store(0, Ordering::Release);
        self.events
            .endpoint_ejected(self.name(), endpoint.addr, period, failures);
    }

    /// Time until an ejected endpoint returns, for the admin API.
    pub fn ejected_for(&self, endpoint: &Endpoint) -> Option<Duration> {
        let now = self.clock.now();
        let until = Nanos(endpoint.ejected_until.load(Ordering::Acquire));
        (until > now).then(|| now.until(until))
    }
}

/// An endpoint chosen for one attempt; releases its in-flight count on drop.
#[derive(Debug)]
pub struct EndpointLease {
    upstream: Arc<Upstream>,
    index: usize,
}

impl EndpointLease {
    pub fn endpoint(&self) -> &Endpoint {
        &self.upstream.endpoints[self.index]
    }

    pub fn index(&self) -> usize {
        self.index
    }

    pub fn peer(&self) -> Box<HttpPeer> {
        Box::new(self.endpoint().peer.clone())
    }
}

impl Drop for EndpointLease {
    fn drop(&mut self) {
        self.endpoint().in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stable key per upstream name for Pingora's connection pool.
fn pool_group(name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::breaker::ManualClock;

    fn pool(
        lb: LoadBalancing,
        n: u16,
        outliers: Option<OutlierSpec>,
    ) -> (Arc<Upstream>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::default());
        let spec = UpstreamSpec {
            load_balancing: lb,
            outlier_detection: outliers,
            ..UpstreamSpec::for_test(
                "p",
                (1..=n)
                    .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
                    .collect(),
            )
        };
        (
            Arc::new(Upstream::new(spec, clock.clone(), Arc::default())),
            clock,
        )
    }

    fn ports(p: &Arc<Upstream>, n: usize) -> Vec<u16> {
        (0..n)
            .map(|_| p.lease(None).endpoint().addr.port())
            .collect()
    }

    #[test]
    fn round_robin_cycles_through_endpoints() {
        let (p, _) = pool(LoadBalancing::RoundRobin, 3, None);
        assert_eq!(ports(&p, 6), vec![1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn least_requests_avoids_the_busy_endpoint() {
        let (p, _) = pool(LoadBalancing::LeastRequests, 2, None);
        let held = p.lease(None);
        let busy = held.endpoint().addr;
        for _ in 0..50 {
            assert_ne!(p.lease(None).endpoint().addr, busy);
        }
        drop(held);
        assert!(
            p.endpoints
                .iter()
                .all(|e| e.in_flight.load(Ordering::Relaxed) == 0)
        );
    }

    #[test]
    fn outliers_are_ejected_for_growing_periods_within_the_pool_share() {
        let spec = OutlierSpec {
            consecutive_failures: NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN),
            ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
            max_ejection_percent: 50,
        };
        let (p, clock) = pool(LoadBalancing::RoundRobin, 2, Some(spec));
        p.report(0, true);
        assert_eq!(p.ejected().count(), 0);
        p.report(0, true);
        assert_eq!(
            ports(&p, 4),
            vec![2, 2, 2, 2],
            "ejected endpoint gets no traffic"
        );
        // The other endpoint fails too, but ejecting it would exceed 50% of the pool.
        p.report(1, true);
        p.report(1, true);
        assert_eq!(p.ejected().count(), 1);
        clock.advance(Duration::from_secs(10));
        assert_eq!(p.ejected().count(), 0, "back after the ejection period");
        p.report(0, true);
        p.report(0, true);
        assert_eq!(
            p.ejected_for(&p.endpoints[0]),
            Some(Duration::from_secs(20))
        );
        clock.advance(Duration::from_secs(20));
        p.report(0, true);
        p.report(0, true);
        assert_eq!(
            p.ejected_for(&p.endpoints[0]),
            Some(Duration::from_secs(25)),
            "capped"
        );
    }

    #[test]
    fn a_failed_endpoint_is_avoided_on_retry() {
        let (p, _) = pool(LoadBalancing::RoundRobin, 3, None);
        for _ in 0..6 {
            assert_ne!(p.lease(Some(1)).index(), 1);
        }
    }
}
