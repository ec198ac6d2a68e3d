//! Endpoints that follow DNS: host-name endpoints are looked up again every
//! `resolve_interval` (sooner when the records' TTL says so, never more often than
//! once a second for a TTL), on a thread of their own; a changed answer becomes a new
//! snapshot with that upstream's endpoints changed (`RuntimeHandle::follow_dns`), in
//! which addresses that stay keep their state. A failed lookup, or one with no
//! address, keeps the last good addresses: an upstream never drops to zero endpoints
//! because DNS had a bad moment. Counted in `gateway_dns_lookups_total`, logged when a
//! name starts and stops failing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::dns::{self, ResolverSpec};
use crate::runtime::RuntimeHandle;

/// Shortest wait a record's TTL can ask for.
const TTL_FLOOR: Duration = Duration::from_secs(1);
/// How often the thread looks at the snapshot for new or changed names.
const TICK: Duration = Duration::from_millis(50);

/// One host-name endpoint being followed.
struct Followed {
    addresses: Vec<SocketAddr>,
    interval: Duration,
    /// The pace the last answer set (its TTL within bounds): a failed lookup is tried
    /// again at the same pace.
    pace: Duration,
    due: Instant,
    failing: bool,
}

/// (upstream, host, port)
type Key = (String, String, u16);

/// Starts the thread, always (a reload may bring a host name; without one it costs a
/// wake-up every 50 ms). A panic in a round is logged and the next round starts
/// afresh: the thread never dies silently with the endpoints frozen.
pub fn spawn(runtime: Arc<RuntimeHandle>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("endpoint-dns".into())
        .spawn(move || {
            let mut followed: HashMap<Key, Followed> = HashMap::new();
            let mut config_hash = String::new();
            loop {
                let survived = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    round(&runtime, &mut followed, &mut config_hash);
                }));
                if survived.is_err() {
                    tracing::error!(target: "gateway::dns", "endpoint refresh round panicked; starting over");
                    followed.clear();
                    config_hash.clear();
                }
                std::thread::sleep(TICK);
            }
        })
        .map(|_| ())
}

fn round(runtime: &RuntimeHandle, followed: &mut HashMap<Key, Followed>, config_hash: &mut String) {
    let snapshot = runtime.snapshot();
    let config = &snapshot.config;
    if config.hash != *config_hash {
        // A reload resolved every name afresh: follow what it found.
        *config_hash = config.hash.clone();
        followed.clear();
        for spec in config.upstreams.values() {
            for host in &spec.hosts {
                for result in ["success", "failure"] {
                    runtime
                        .metrics
                        .dns_lookups
                        .with_label_values(&[&spec.name, result]);
                }
                followed.insert(
                    (spec.name.clone(), host.host.clone(), host.port),
                    Followed {
                        addresses: host.addresses.clone(),
                        interval: spec.resolve_interval,
                        pace: spec.resolve_interval,
                        // The load's answer said nothing of its TTL (the config keeps
                        // none): the first look again is soon, then TTLs pace it.
                        due: Instant::now() + TTL_FLOOR.min(spec.resolve_interval),
                        failing: false,
                    },
                );
            }
        }
    }
    let resolver = config.server.dns.clone();
    drop(snapshot);
    let now = Instant::now();
    for (key, entry) in followed.iter_mut().filter(|(_, e)| e.due <= now) {
        look_again(runtime, &resolver, key, entry);
    }
}

fn look_again(runtime: &RuntimeHandle, resolver: &ResolverSpec, key: &Key, entry: &mut Followed) {
    let (upstream, host, port) = key;
    let counted = |result: &str| {
        runtime
            .metrics
            .dns_lookups
            .with_label_values(&[upstream, result])
            .inc();
    };
    match dns::lookup(resolver, host, *port) {
        Ok(answer) => {
            counted("success");
            if entry.failing {
                entry.failing = false;
                tracing::info!(target: "gateway::dns", upstream = %upstream, host = %host, "host name resolves again");
            }
            entry.pace = next_lookup(answer.ttl, entry.interval);
            entry.due = Instant::now() + entry.pace;
            if answer.addresses != entry.addresses {
                changed(runtime, key, &entry.addresses, &answer.addresses);
                entry.addresses = answer.addresses;
            }
        }
        Err(error) => {
            counted("failure");
            if !entry.failing {
                entry.failing = true;
                tracing::warn!(
                    target: "gateway::dns",
                    upstream = %upstream,
                    host = %host,
                    %error,
                    kept = ?entry.addresses,
                    "host name lookup failed; the last good addresses stay"
                );
            }
            entry.due = Instant::now() + entry.pace;
        }
    }
}

/// When to look again: at the TTL, within [1 s, `resolve_interval`]; without a TTL
/// (the system resolver), at the interval.
fn next_lookup(ttl: Option<Duration>, interval: Duration) -> Duration {
    ttl.map_or(interval, |ttl| ttl.clamp(TTL_FLOOR.min(interval), interval))
}

fn changed(
    runtime: &RuntimeHandle,
    (upstream, host, port): &Key,
    old: &[SocketAddr],
    new: &[SocketAddr],
) {
    let Some(fresh) = runtime.follow_dns(upstream, host, *port, new.to_vec()) else {
        return;
    };
    let added: Vec<String> = new
        .iter()
        .filter(|a| !old.contains(a))
        .map(ToString::to_string)
        .collect();
    let removed: Vec<String> = old
        .iter()
        .filter(|a| !new.contains(a))
        .map(ToString::to_string)
        .collect();
    runtime.metrics.endpoints_gone(upstream, &removed);
    tracing::info!(
        target: "gateway::dns",
        upstream = %upstream,
        host = %host,
        added = ?added,
        removed = ?removed,
        fresh = fresh.len(),
        "endpoints follow DNS"
    );
    runtime.events.publish(json!({
        "type": "endpoints_changed",
        "upstream": upstream,
        "host": format!("{host}:{port}"),
        "added": added,
        "removed": removed,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_records_ttl_is_honoured_within_bounds() {
        let s = Duration::from_secs;
        assert_eq!(next_lookup(Some(s(5)), s(30)), s(5));
        assert_eq!(
            next_lookup(Some(s(0)), s(30)),
            s(1),
            "a zero TTL is not a busy loop"
        );
        assert_eq!(next_lookup(Some(s(3600)), s(30)), s(30));
        assert_eq!(next_lookup(None, s(30)), s(30));
        let short = Duration::from_millis(200);
        assert_eq!(next_lookup(Some(s(0)), short), short);
    }
}
