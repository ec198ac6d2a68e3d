//! `limits.instances`: how many initialised instances a plugin keeps for reuse. The
//! pool only matters when calls overlap, which on one proxy thread they never do
//! (calls are synchronous); so this test drives a real component from three threads
//! at once, in process, through the same `Plugin` the request path calls, and reads
//! the pool through the metrics an operator sees.

use std::path::Path;
use std::sync::{Arc, Barrier};

use gateway::config;
use gateway::metrics::Metrics;
use gateway::plugin::{Exchange, PluginSet, types};
use gateway_tests::{plugin_entry, sample};
use pingora::http::RequestHeader;

const CREATED: &str = "gateway_plugin_instances_created_total{plugin=\"pool\"}";
const IDLE: &str = "gateway_plugin_instances_idle{plugin=\"pool\"}";

/// Three calls at once, each working 100 ms (`x-hostile: spin`), and what the metrics
/// say after: (instances created so far, instances idle).
fn overlapping_calls(plugin: &Arc<gateway::plugin::Plugin>, metrics: &Metrics) -> (f64, f64) {
    let start = Arc::new(Barrier::new(3));
    std::thread::scope(|scope| {
        for _ in 0..3 {
            let start = Arc::clone(&start);
            scope.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let _entered = rt.enter();
                let mut request = RequestHeader::build("GET", b"/", None).expect("request");
                request.append_header("x-hostile", "spin").expect("header");
                let (route, upstream) = ("r".to_string(), "u".to_string());
                let outcome = types::Outcome {
                    response: Some(types::ResponseInfo {
                        status: 200,
                        body_prefix: None,
                    }),
                    error: None,
                    latency_us: 1_000,
                };
                start.wait();
                let verdict = plugin.classify(
                    &outcome,
                    Exchange {
                        request: &request,
                        route: &route,
                        upstream: &upstream,
                        response: None,
                        trailers: None,
                    },
                );
                assert!(verdict.is_ok(), "{verdict:?}");
            });
        }
    });
    let scrape = metrics.render(|_| {});
    let value = |series| sample(&scrape, series).unwrap_or_else(|| panic!("{series} missing"));
    (value(CREATED), value(IDLE))
}

#[test]
fn the_pool_keeps_at_most_limits_instances_and_reuses_them() {
    let yaml = format!(
        "listeners: [{{ address: \"127.0.0.1:18999\" }}]\nplugins:\n{}upstreams:\n  api:\n    endpoints: [\"127.0.0.1:9\"]\n    breaker: {{ predicate: pool }}\nroutes:\n  - {{ upstream: api }}\n",
        plugin_entry(
            "pool",
            "hostile-predicate",
            "predicate",
            "limits: { instances: 2, timeout: 5s }"
        )
    );
    let config = config::parse(&yaml, Path::new("pool.yaml")).expect("config");
    let metrics = Metrics::default();
    let set = PluginSet::load(&config, None, &metrics).expect("plugin loads");
    let plugin = Arc::clone(set.iter().next().expect("one plugin"));

    // Three calls at once, each on its own instance: the idle ones first, then new
    // ones. A round where a call started late reuses instead (fewer created); rounds
    // repeat until one overlapped fully with two idle before it. Never more than two
    // are kept, whatever happened.
    let scrape = metrics.render(|_| {});
    let (mut created, mut idle) = (
        sample(&scrape, CREATED).expect("created"),
        sample(&scrape, IDLE).expect("idle"),
    );
    for _ in 0..20 {
        let (now_created, now_idle) = overlapping_calls(&plugin, &metrics);
        assert!(
            now_idle <= 2.0,
            "{now_idle} idle instances with limits.instances: 2"
        );
        let fully_overlapped = now_created - created == 3.0 - idle;
        if fully_overlapped {
            assert_eq!(now_idle, 2.0, "three instances lived at once; two are kept");
            if idle == 2.0 {
                // The two kept served two of the three calls: only one was created.
                assert_eq!(now_created - created, 1.0);
                return;
            }
        }
        (created, idle) = (now_created, now_idle);
    }
    panic!("three calls never overlapped with two instances idle, in twenty tries");
}
