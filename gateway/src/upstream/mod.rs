//! Upstream pools: endpoints, load balancing, outlier ejection, and the resilience
//! state every request to the pool goes through (breaker, bulkhead).

pub mod bulkhead;
pub mod classify;
pub mod endpoint;
pub mod failure_tally;
pub mod health;
pub mod retry_budget;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pingora::upstreams::peer::HttpPeer;

use crate::breaker::{Breaker, BreakerPolicy, Clock, Nanos, WindowCarried, WindowPolicy};
use crate::config::{LoadBalancing, OutlierSpec, UpstreamSpec};
use crate::events::{EventHub, ShadowEvents, UpstreamEvents};
use crate::metrics::UpstreamMetrics;
use bulkhead::Bulkhead;
pub use endpoint::Endpoint;
use failure_tally::FailureTally;
use retry_budget::RetryBudget;

/// A named pool of endpoints.
#[derive(Debug)]
pub struct Upstream {
    pub spec: UpstreamSpec,
    pub endpoints: Vec<Endpoint>,
    pub breaker: Arc<Breaker>,
    /// `breaker.shadow`: fed the same outcomes, decides nothing.
    pub shadow: Option<Arc<Breaker>>,
    pub bulkhead: Arc<Bulkhead>,
    pub retry_budget: Arc<RetryBudget>,
    pub metrics: UpstreamMetrics,
    /// What calls failed with since the breaker's last transition.
    pub failures: Arc<FailureTally>,
    next: AtomicUsize,
    pub clock: Arc<dyn Clock>,
    pub events: Arc<EventHub>,
    /// Serializes ejection decisions so the pool-share cap holds (shared with the
    /// snapshots it succeeds, whose requests report to the same endpoints).
    ejecting: Arc<Mutex<()>>,
}

/// An upstream's state in a form another process can adopt.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct UpstreamExport {
    pub breaker: crate::breaker::BreakerExport,
    pub shadow: Option<crate::breaker::BreakerExport>,
    pub endpoints: Vec<endpoint::EndpointExport>,
}

/// Something a rebuilt upstream could not carry over from the one it replaces.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Fresh {
    pub upstream: String,
    /// What starts fresh: `upstream`, `endpoint 10.0.0.1:80`, `window`, `shadow`.
    pub part: String,
    pub why: String,
}

impl Upstream {
    pub fn new(spec: UpstreamSpec, clock: Arc<dyn Clock>, events: Arc<EventHub>) -> Self {
        let endpoints = spec
            .endpoints
            .iter()
            .map(|addr| Endpoint::new(*addr, &spec, Arc::default()))
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
        let shadow = spec
            .shadow
            .map(|policy| shadow_breaker(&spec.name, policy, &clock, &events, &failures));
        let bulkhead = Arc::new(Bulkhead::new(spec.max_concurrent_requests.map(|n| n.get())));
        let retry_budget = Arc::new(RetryBudget::new(
            spec.retries.budget_ratio,
            spec.retries.budget_min_per_second,
        ));
        let metrics = events.metrics.for_upstream(&spec.name);
        Self {
            metrics,
            failures,
            spec,
            endpoints,
            breaker,
            shadow,
            bulkhead,
            retry_budget,
            next: AtomicUsize::new(0),
            clock,
            events,
            ejecting: Arc::default(),
        }
    }

    /// The same upstream under a new definition. Everything learnt is carried over:
    /// the breaker (state, the rest of an open period, probes in flight, counts; its
    /// window kept, or rebuilt when its shape changed), the shadow policy's breaker,
    /// the bulkhead's in-flight count, the retry budget, and per endpoint address
    /// load, ejection and health. New settings apply from the next call. Returns what
    /// could not be carried over.
    pub fn succeed(spec: UpstreamSpec, previous: &Upstream) -> (Self, Vec<Fresh>) {
        let mut fresh = Vec::new();
        let mut note = |part: String, why: String| {
            fresh.push(Fresh {
                upstream: spec.name.clone(),
                part,
                why,
            });
        };
        let endpoints = spec
            .endpoints
            .iter()
            .map(|addr| {
                let kept = previous.endpoints.iter().find(|e| e.addr == *addr);
                let state = match kept {
                    Some(e) => Arc::clone(&e.state),
                    None => {
                        note(format!("endpoint {addr}"), "new endpoint".into());
                        Arc::default()
                    }
                };
                Endpoint::new(*addr, &spec, state)
            })
            .collect();
        if let Some(WindowCarried::Rebuilt { kept, dropped }) =
            previous.breaker.reconfigure(spec.breaker)
        {
            note(
                "window".into(),
                rebuilt(
                    previous.spec.breaker.window,
                    spec.breaker.window,
                    kept,
                    dropped,
                ),
            );
        }
        let shadow = match (spec.shadow, &previous.shadow) {
            (Some(policy), Some(existing)) => {
                if let Some(WindowCarried::Rebuilt { kept, dropped }) = existing.reconfigure(policy)
                {
                    let was = previous.spec.shadow.map_or(policy.window, |p| p.window);
                    note(
                        "shadow window".into(),
                        rebuilt(was, policy.window, kept, dropped),
                    );
                }
                Some(Arc::clone(existing))
            }
            (Some(policy), None) => {
                note("shadow".into(), "new shadow policy".into());
                Some(shadow_breaker(
                    &spec.name,
                    policy,
                    &previous.clock,
                    &previous.events,
                    &previous.failures,
                ))
            }
            (None, _) => None,
        };
        previous
            .bulkhead
            .set_limit(spec.max_concurrent_requests.map(|n| n.get()));
        previous.retry_budget.reconfigure(
            spec.retries.budget_ratio,
            spec.retries.budget_min_per_second,
        );
        let upstream = Self {
            metrics: previous.metrics.clone(),
            failures: Arc::clone(&previous.failures),
            endpoints,
            breaker: Arc::clone(&previous.breaker),
            shadow,
            bulkhead: Arc::clone(&previous.bulkhead),
            retry_budget: Arc::clone(&previous.retry_budget),
            next: AtomicUsize::new(previous.next.load(Ordering::Relaxed)),
            clock: Arc::clone(&previous.clock),
            events: Arc::clone(&previous.events),
            ejecting: Arc::clone(&previous.ejecting),
            spec,
        };
        (upstream, fresh)
    }

    /// What this pool learnt, for another process to adopt (graceful upgrade).
    pub fn export(&self) -> UpstreamExport {
        let now = self.clock.now();
        UpstreamExport {
            breaker: self.breaker.export(),
            shadow: self.shadow.as_ref().map(|s| s.export()),
            endpoints: self
                .endpoints
                .iter()
                .map(|e| e.state.export(e.addr, now))
                .collect(),
        }
    }

    /// Takes over what another process's pool of the same name learnt; endpoints are
    /// matched by address, the rest of theirs is ignored. Operator modes are not part
    /// of it. Returns the window calls that did not fit.
    pub fn adopt(&self, state: &UpstreamExport) -> u32 {
        let now = self.clock.now();
        for endpoint in &self.endpoints {
            if let Some(theirs) = state.endpoints.iter().find(|e| e.address == endpoint.addr) {
                endpoint.state.adopt(theirs, now);
                endpoint.state.settle(&self.spec);
            }
        }
        if let (Some(shadow), Some(theirs)) = (&self.shadow, &state.shadow) {
            shadow.adopt(theirs);
        }
        self.breaker.adopt(&state.breaker)
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    fn available(&self, index: usize, now: Nanos) -> bool {
        let endpoint = &self.endpoints[index];
        // What a setting that is gone decided does not count, even when a request of an
        // older snapshot still writes it into the shared state.
        let ejected = self.spec.outlier_detection.is_some()
            && endpoint.state.ejected_until.load(Ordering::Acquire) > now.0;
        !ejected && self.is_healthy(endpoint)
    }

    /// An endpoint's health as this pool sees it: without health checks, healthy.
    pub fn is_healthy(&self, endpoint: &Endpoint) -> bool {
        self.spec.health_check.is_none() || endpoint.is_healthy()
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
            endpoint.state.health_streak.store(0, Ordering::Release);
            return None;
        }
        let streak = endpoint.state.health_streak.fetch_add(1, Ordering::AcqRel) + 1;
        let needed = if passed {
            check.healthy_threshold
        } else {
            check.unhealthy_threshold
        };
        if streak < needed.get() {
            return None;
        }
        endpoint.state.health_streak.store(0, Ordering::Release);
        endpoint.state.healthy.store(passed, Ordering::Release);
        self.events
            .endpoint_health(self.name(), endpoint.addr, passed);
        Some(passed)
    }

    /// Endpoints currently ejected.
    pub fn ejected(&self) -> impl Iterator<Item = &Endpoint> {
        let now = self.clock.now();
        let detecting = self.spec.outlier_detection.is_some();
        self.endpoints
            .iter()
            .filter(move |e| detecting && e.state.ejected_until.load(Ordering::Acquire) > now.0)
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
                let load = |i: usize| self.endpoints[i].state.in_flight.load(Ordering::Relaxed);
                if load(b) < load(a) { b } else { a }
            }
        };
        self.endpoints[index]
            .state
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
            if endpoint.state.consecutive_failures.load(Ordering::Relaxed) != 0 {
                endpoint
                    .state
                    .consecutive_failures
                    .store(0, Ordering::Relaxed);
            }
            if endpoint.state.ejections.load(Ordering::Relaxed) != 0
                && self.available(index, self.clock.now())
            {
                endpoint.state.ejections.store(0, Ordering::Relaxed);
            }
            return;
        }
        let failures = endpoint
            .state
            .consecutive_failures
            .fetch_add(1, Ordering::AcqRel)
            + 1;
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
        let repeats = endpoint.state.ejections.fetch_add(1, Ordering::AcqRel);
        let factor = 1u32.checked_shl(repeats.min(16)).unwrap_or(u32::MAX);
        let period = spec.ejection.saturating_mul(factor).min(spec.max_ejection);
        endpoint
            .state
            .ejected_until
            .store(now.after(period).0, Ordering::Release);
        endpoint
            .state
            .consecutive_failures
            .store(0, Ordering::Release);
        self.events
            .endpoint_ejected(self.name(), endpoint.addr, period, failures);
    }

    /// Time until an ejected endpoint returns, for the admin API.
    pub fn ejected_for(&self, endpoint: &Endpoint) -> Option<Duration> {
        let now = self.clock.now();
        let until = Nanos(endpoint.state.ejected_until.load(Ordering::Acquire));
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
        self.endpoint()
            .state
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a window's rebuild reads in the reload log.
fn rebuilt(from: WindowPolicy, to: WindowPolicy, kept: u32, dropped: u32) -> String {
    let shape = |w: WindowPolicy| match w {
        WindowPolicy::Count { size } => format!("the last {size} calls"),
        WindowPolicy::Time { size, buckets } => format!("{size:?} in {buckets} buckets"),
    };
    format!(
        "window changed from {} to {}: {kept} calls re-bucketed, {dropped} dropped",
        shape(from),
        shape(to)
    )
}

fn shadow_breaker(
    name: &str,
    policy: BreakerPolicy,
    clock: &Arc<dyn Clock>,
    events: &Arc<EventHub>,
    failures: &Arc<FailureTally>,
) -> Arc<Breaker> {
    let listener = Arc::new(ShadowEvents {
        hub: Arc::clone(events),
        failures: Arc::clone(failures),
    });
    Arc::new(Breaker::new(name, policy, Arc::clone(clock), listener))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
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
                .all(|e| e.state.in_flight.load(Ordering::Relaxed) == 0)
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
