//! The on-disk cache of compiled plugins (`server.plugin_cache_dir`): a second start
//! loads from it instead of compiling, and an entry that is corrupt, or that another
//! component's entry replaced, is detected, compiled again and replaced, never loaded.
//! The small example plugins stand in for large ones; the cost figures for a large
//! component are in docs/PERFORMANCE.md.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use gateway_tests::{Gateway, Reply, Request, plugin_entry, start_origin};

/// A config with its own cache directory, a predicate counting 418 as a failure, and a
/// fallback: both plugins are exercised, so code loaded from the cache must work.
fn config(cache: &Path, origin: std::net::SocketAddr) -> String {
    format!(
        "server: {{ plugin_cache_dir: \"{}\" }}\nplugins:\n{}{}upstreams:\n  a:\n    endpoints: [\"{origin}\"]\n    breaker: {{ consecutive_failures: 2, predicate: strict, fallback: {{ plugin: degraded }} }}\nroutes:\n  - {{ upstream: a }}\n",
        cache.display(),
        plugin_entry(
            "strict",
            "status-latency-predicate",
            "predicate",
            "config: { failure_statuses: \"418\" }"
        ),
        plugin_entry(
            "degraded",
            "degraded-fallback",
            "fallback",
            "config: { document: { quotes: [] } }"
        ),
    )
}

/// Where each plugin's component came from, as the start-up log says.
fn sources(gw: &Gateway) -> Vec<(String, String)> {
    gw.logs()
        .lines()
        .filter(|l| l.contains("plugin component ready"))
        .filter_map(|l| {
            let field = |key: &str| {
                let rest = &l[l.find(&format!("{key}="))? + key.len() + 1..];
                Some(
                    rest.split_whitespace()
                        .next()?
                        .trim_matches('"')
                        .to_string(),
                )
            };
            Some((field("plugin")?, field("source")?))
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// 418s are failures to the predicate: two open the breaker, and the fallback answers.
async fn plugins_work(gw: &Gateway) {
    let mut conn = gw.conn().await;
    for _ in 0..2 {
        assert_eq!(conn.get("/").await.expect("request").status, 418);
    }
    let answer = conn.get("/").await.expect("request");
    assert_eq!(answer.status, 200, "the fallback answers: {answer:?}");
    assert_eq!(answer.header("x-gateway-fallback"), Some("circuit_open"));
    assert_eq!(answer.header("x-fallback"), Some("degraded"));
}

fn teapot() -> gateway_tests::Handler {
    std::sync::Arc::new(|_: &Request| Reply::text(418, "teapot"))
}

/// The compiled entries in the cache (wasmtime's files without an extension).
fn entries(cache: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for compiler in std::fs::read_dir(cache.join("wasmtime/modules")).expect("modules dir") {
        for file in std::fs::read_dir(compiler.expect("entry").path()).expect("compiler dir") {
            let path = file.expect("entry").path();
            if path.extension().is_none() {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn a_second_start_loads_compiled_plugins_from_the_cache() {
    let origin = start_origin(teapot()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("cache");
    let config = config(&cache, origin.addr());

    let first = Gateway::start(&config).await;
    assert_eq!(
        sources(&first),
        pairs(&[("degraded", "compiled"), ("strict", "compiled")])
    );
    plugins_work(&first).await;
    drop(first);
    assert_eq!(entries(&cache).len(), 2, "one entry per component");
    let mode = std::fs::metadata(&cache)
        .expect("cache dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "the cache directory is private");

    let second = Gateway::start(&config).await;
    assert_eq!(
        sources(&second),
        pairs(&[("degraded", "cache"), ("strict", "cache")])
    );
    plugins_work(&second).await;
}

#[tokio::test]
async fn a_corrupt_or_substituted_entry_is_compiled_again_never_loaded() {
    let origin = start_origin(teapot()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("cache");
    let config = config(&cache, origin.addr());
    drop(Gateway::start(&config).await);
    let [one, other] = <[PathBuf; 2]>::try_from(entries(&cache)).expect("two entries");
    let intact = std::fs::read(&one).expect("entry");

    // One flipped byte in the middle of an entry: still a zstd frame of the right size.
    let mut corrupt = intact.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0x55;
    std::fs::write(&one, &corrupt).expect("corrupt the entry");
    let gw = Gateway::start(&config).await;
    gw.wait_for_log(&[
        "plugin cache entry corrupt",
        "entry differs from its record",
    ])
    .await;
    // Which plugin `one` belongs to does not matter: that one alone is compiled.
    let seen = sources(&gw);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen.iter()
            .filter(|(_, source)| source == "compiled")
            .count(),
        1,
        "only the corrupt entry is compiled again: {seen:?}"
    );
    plugins_work(&gw).await;
    drop(gw);
    assert_eq!(
        std::fs::read(&one).expect("entry"),
        intact,
        "the corrupt entry was replaced by a fresh compilation"
    );

    // Another component's entry put in its place: a valid entry that wasmtime's own
    // checks would accept, but not the one recorded for this component.
    std::fs::copy(&other, &one).expect("substitute the entry");
    let gw = Gateway::start(&config).await;
    gw.wait_for_log(&[
        "plugin cache entry corrupt",
        "entry differs from its record",
    ])
    .await;
    assert_eq!(
        sources(&gw)
            .iter()
            .filter(|(_, source)| source == "compiled")
            .count(),
        1
    );
    plugins_work(&gw).await;
    drop(gw);

    // Both entries intact again: nothing is compiled.
    let gw = Gateway::start(&config).await;
    assert!(
        sources(&gw).iter().all(|(_, source)| source == "cache"),
        "{:?}",
        sources(&gw)
    );
}

#[tokio::test]
async fn a_cache_directory_others_can_write_disables_the_cache_not_the_gateway() {
    let origin = start_origin(teapot()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("shared");
    std::fs::create_dir(&cache).expect("create");
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let gw = Gateway::start(&config(&cache, origin.addr())).await;
    gw.wait_for_log(&["plugin cache disabled", "0777"]).await;
    assert!(sources(&gw).iter().all(|(_, source)| source == "compiled"));
    plugins_work(&gw).await;
    assert!(
        !cache.join("wasmtime").exists(),
        "nothing is written to a shared directory"
    );
}
