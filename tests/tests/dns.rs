//! Endpoints that follow DNS: a name server the test controls moves a host name's
//! addresses; the gateway adds and removes endpoints without a reload, keeps the state
//! of addresses that stay, and keeps the last good set when lookups fail (a reload
//! meanwhile included). The records' TTL (1 s) paces the lookups, not the 30 s
//! `resolve_interval`: every wait below would time out if TTLs were ignored.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use gateway_tests::dns::{DnsAnswer, DnsServer};
use gateway_tests::{Gateway, Origin, Scripted, check_config, echo, wait_until};

/// Origins on three loopback addresses, one port: what a name's A records point at.
async fn origins() -> (Origin, Origin, Origin, u16) {
    loop {
        let (_, failing) = Scripted::new(502);
        let a = Origin::bind(SocketAddr::from(([127, 0, 0, 3], 0)), failing)
            .await
            .expect("origin a");
        let port = a.addr().port();
        let b = Origin::bind(SocketAddr::from(([127, 0, 0, 4], port)), echo("b")).await;
        let c = Origin::bind(SocketAddr::from(([127, 0, 0, 5], port)), echo("c")).await;
        if let (Ok(b), Ok(c)) = (b, c) {
            return (a, b, c, port);
        }
    }
}

fn records(last: &[u8], ttl: u32) -> DnsAnswer {
    DnsAnswer::Records {
        addresses: last.iter().map(|n| Ipv4Addr::new(127, 0, 0, *n)).collect(),
        ttl,
    }
}

async fn endpoints(gw: &Gateway) -> Vec<serde_json::Value> {
    let health = gw.admin("GET", "/health/upstreams", &[], b"").await.json();
    health[0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .clone()
}

async fn addresses(gw: &Gateway) -> Vec<String> {
    let mut list: Vec<String> = endpoints(gw)
        .await
        .iter()
        .map(|e| e["address"].as_str().expect("address").to_string())
        .collect();
    list.sort();
    list
}

fn at(last: u8, port: u16) -> String {
    format!("127.0.0.{last}:{port}")
}

#[tokio::test]
async fn endpoints_follow_a_host_names_records_keeping_state_and_the_last_good_set() {
    let (_a, _b, _c, port) = origins().await;
    let dns = DnsServer::start(records(&[3, 4], 1));
    let gw = Gateway::start(&format!(
        "server:
  dns: {{ nameservers: [\"{}\"], timeout: 300ms }}
upstreams:
  api:
    endpoints: [\"svc.test:{port}\"]
    resolve_interval: 30s
    outlier_detection: {{ consecutive_failures: 2, ejection: 1m, max_ejection_percent: 50 }}
routes:
  - {{ upstream: api }}
",
        dns.addr
    ))
    .await;
    assert_eq!(addresses(&gw).await, vec![at(3, port), at(4, port)]);

    // The endpoint at .3 answers 502: it is ejected (state the next moves must keep).
    wait_until("127.0.0.3 ejected", Duration::from_secs(10), async || {
        gw.get("/").await;
        endpoints(&gw)
            .await
            .iter()
            .any(|e| e["address"] == at(3, port).as_str() && e["ejected"] == true)
    })
    .await;

    // A new record: .5 joins without a reload, .3 is still ejected.
    let generation = gw.admin("GET", "/ready", &[], b"").await.json()["generation"].clone();
    dns.set(records(&[3, 4, 5], 1));
    wait_until("three endpoints", Duration::from_secs(10), async || {
        addresses(&gw).await.len() == 3
    })
    .await;
    assert_eq!(
        addresses(&gw).await,
        vec![at(3, port), at(4, port), at(5, port)]
    );
    let list = endpoints(&gw).await;
    let state = |last: u8| {
        list.iter()
            .find(|e| e["address"] == at(last, port).as_str())
            .cloned()
            .expect("endpoint")
    };
    assert_eq!(state(3)["ejected"], true, "{list:?}");
    assert_eq!(state(5)["ejected"], false);
    assert_eq!(
        gw.admin("GET", "/ready", &[], b"").await.json()["generation"],
        generation,
        "no reload: the config generation is the same"
    );
    gw.wait_for_log(&["endpoints follow DNS", "127.0.0.5"])
        .await;
    wait_until(
        "a request reaches .5",
        Duration::from_secs(10),
        async || gw.get("/").await.json()["origin"] == "c",
    )
    .await;

    // Lookups fail: the last good set stays, the failures are counted and logged.
    let failures = "gateway_dns_lookups_total{upstream=\"api\",result=\"failure\"}";
    let before = gw.metric(failures).await;
    dns.set(DnsAnswer::ServFail);
    gw.wait_metric_at_least(failures, before + 2.0).await;
    dns.set(DnsAnswer::Empty);
    gw.wait_metric_at_least(failures, before + 4.0).await;
    dns.set(DnsAnswer::Silent);
    gw.wait_metric_at_least(failures, before + 5.0).await;
    gw.wait_for_log(&[
        "host name lookup failed; the last good addresses stay",
        "svc.test",
    ])
    .await;
    assert_eq!(
        addresses(&gw).await.len(),
        3,
        "never fewer on a failed lookup"
    );
    assert_eq!(gw.get("/").await.status, 200);

    // The name moves to .5 alone: .3 and .4 leave.
    dns.set(records(&[5], 1));
    wait_until("only .5", Duration::from_secs(10), async || {
        addresses(&gw).await == vec![at(5, port)]
    })
    .await;
    gw.wait_for_log(&["host name resolves again"]).await;
    for _ in 0..4 {
        assert_eq!(gw.get("/").await.json()["origin"], "c");
    }
}

#[test]
fn a_resolve_interval_below_100ms_and_a_bad_name_server_are_refused() {
    let (code, _, stderr) = check_config(
        "dns-interval",
        "upstreams:\n  api:\n    endpoints: [\"localhost:8080\"]\n    resolve_interval: 10ms\nroutes:\n  - { upstream: api }\n",
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("upstreams.api.resolve_interval: must be at least 100ms"),
        "{stderr}"
    );
    let (code, _, stderr) = check_config(
        "dns-server",
        "server:\n  dns: { nameservers: [\"10.0.0.10\"] }\nupstreams:\n  api:\n    endpoints: [\"127.0.0.1:8080\"]\nroutes:\n  - { upstream: api }\n",
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("server.dns.nameservers[0]: `10.0.0.10` is not ip:port"),
        "{stderr}"
    );
}
