//! Upstream pools: endpoints, load balancing and the peer Pingora connects to.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use pingora::upstreams::peer::HttpPeer;

use crate::config::{LoadBalancing, UpstreamSpec};

/// One address of a pool.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Requests currently sent to this endpoint (least-requests balancing).
    in_flight: AtomicUsize,
    /// Connection template: cloning it is cheaper than building one per request.
    peer: HttpPeer,
}

/// A named pool of endpoints.
#[derive(Debug)]
pub struct Upstream {
    pub spec: UpstreamSpec,
    pub endpoints: Vec<Endpoint>,
    next: AtomicUsize,
}

impl Upstream {
    pub fn new(spec: UpstreamSpec) -> Self {
        let endpoints = spec
            .endpoints
            .iter()
            .map(|addr| {
                let mut peer = HttpPeer::new(*addr, false, String::new());
                let t = spec.timeouts;
                peer.options.connection_timeout = Some(t.connect);
                peer.options.read_timeout = Some(t.read);
                peer.options.write_timeout = Some(t.write);
                peer.options.idle_timeout = Some(t.idle);
                Endpoint {
                    addr: *addr,
                    in_flight: AtomicUsize::new(0),
                    peer,
                }
            })
            .collect();
        Self {
            spec,
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Chooses an endpoint and counts the request against it until the lease drops.
    pub fn lease(self: &Arc<Self>) -> EndpointLease {
        let count = self.endpoints.len();
        let index = match self.spec.load_balancing {
            LoadBalancing::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % count,
            LoadBalancing::LeastRequests if count > 1 => {
                // Power of two random choices: near-optimal, no global ordering to maintain.
                let a = rand::random::<usize>() % count;
                let b = (a + 1 + rand::random::<usize>() % (count - 1)) % count;
                let load = |i: usize| self.endpoints[i].in_flight.load(Ordering::Relaxed);
                if load(b) < load(a) { b } else { a }
            }
            LoadBalancing::LeastRequests => 0,
        };
        self.endpoints[index]
            .in_flight
            .fetch_add(1, Ordering::Relaxed);
        EndpointLease {
            upstream: Arc::clone(self),
            index,
        }
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

    pub fn peer(&self) -> Box<HttpPeer> {
        Box::new(self.endpoint().peer.clone())
    }
}

impl Drop for EndpointLease {
    fn drop(&mut self) {
        self.endpoint().in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Timeouts;

    fn pool(lb: LoadBalancing, n: u16) -> Arc<Upstream> {
        Arc::new(Upstream::new(UpstreamSpec {
            name: "p".into(),
            endpoints: (1..=n)
                .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
                .collect(),
            load_balancing: lb,
            timeouts: Timeouts::default(),
            breaker: Default::default(),
        }))
    }

    #[test]
    fn round_robin_cycles_through_endpoints() {
        let p = pool(LoadBalancing::RoundRobin, 3);
        let ports: Vec<u16> = (0..6).map(|_| p.lease().endpoint().addr.port()).collect();
        assert_eq!(ports, vec![1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn least_requests_avoids_the_busy_endpoint() {
        let p = pool(LoadBalancing::LeastRequests, 2);
        let held = p.lease();
        let busy = held.endpoint().addr;
        for _ in 0..50 {
            assert_ne!(p.lease().endpoint().addr, busy);
        }
        drop(held);
        assert!(
            p.endpoints
                .iter()
                .all(|e| e.in_flight.load(Ordering::Relaxed) == 0)
        );
    }
}
