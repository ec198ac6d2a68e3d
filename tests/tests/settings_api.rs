//! Breaker settings through the admin API, with the file as the single source of
//! truth: a change is checked like the file, applied with state kept, written into the
//! file around its comments, and refused when the file changed under it.

use gateway_tests::{Gateway, Options, echo, start_origin};
use serde_json::{Value, json};

fn body(origin: std::net::SocketAddr) -> String {
    format!(
        "# The API pool.
upstreams:
  api:
    endpoints: [\"{origin}\"]   # one origin
    breaker:
      # Lenient while we learn.
      failure_rate: 0.5   # half
      minimum_requests: 30
    retries:
      attempts: 0
routes:
  - {{ upstream: api }}
"
    )
}

async fn put(gw: &Gateway, section: &str, change: Value, headers: &[(&str, &str)]) -> (u16, Value) {
    let reply = gw
        .admin(
            "PUT",
            &format!("/api/v1/upstreams/api/{section}"),
            headers,
            change.to_string().as_bytes(),
        )
        .await;
    (reply.status, reply.json())
}

fn file(gw: &Gateway) -> String {
    std::fs::read_to_string(&gw.config_path).expect("config file")
}

#[tokio::test]
async fn a_change_is_applied_with_state_kept_and_written_into_the_file_around_its_comments() {
    let origin = start_origin(echo("a")).await;
    let gw = Gateway::start(&body(origin.addr())).await;
    for _ in 0..5 {
        assert_eq!(gw.get("/").await.status, 200);
    }
    let before = file(&gw);

    let read = gw
        .admin("GET", "/api/v1/upstreams/api/breaker", &[], b"")
        .await
        .json();
    assert_eq!(
        read["value"],
        json!({"failure_rate": 0.5, "minimum_requests": 30})
    );
    let hash = read["file_hash"].as_str().expect("hash").to_string();

    let (status, reply) = put(
        &gw,
        "breaker",
        json!({"failure_rate": 0.25, "half_open": {"permitted_requests": 2}}),
        &[("if-match", &format!("\"{hash}\""))],
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["old"],
        json!({"failure_rate": 0.5, "minimum_requests": 30})
    );
    assert_eq!(
        reply["value"],
        json!({"failure_rate": 0.25, "minimum_requests": 30, "half_open": {"permitted_requests": 2}})
    );
    assert_eq!(reply["previous_file_hash"], hash.as_str());
    assert_ne!(reply["file_hash"], hash.as_str());

    // Only the touched keys changed: comments, quoting and order are the file's.
    let expected = before
        .replace("failure_rate: 0.5   # half", "failure_rate: 0.25   # half")
        .replace(
            "      minimum_requests: 30\n",
            "      minimum_requests: 30\n      half_open:\n        permitted_requests: 2\n",
        );
    assert_eq!(file(&gw), expected);

    // Applied through the reload path, the breaker's state kept.
    let breaker = gw.breaker("api").await;
    assert_eq!(breaker["thresholds"]["failure_rate"], 0.25);
    assert_eq!(breaker["half_open"]["permitted_requests"], 2);
    assert_eq!(breaker["window"]["calls"], 5, "{breaker}");
    let config = gw.admin("GET", "/admin/config", &[], b"").await.json();
    assert_eq!(config["last_reload"]["trigger"], "api_settings");

    // A later reload of the file does not undo it: the file already says so.
    let reload = gw.admin("POST", "/admin/reload", &[], b"").await.json();
    assert_eq!(reload["result"], "unchanged", "{reload}");
    assert_eq!(gw.breaker("api").await["thresholds"]["failure_rate"], 0.25);

    // Who, what, old and new in the audit log.
    gw.wait_for_log(&[
        "config section changed through the admin API",
        "section=breaker",
        "\"failure_rate\":0.5",
        "\"failure_rate\":0.25",
    ])
    .await;

    // A bulkhead, a removed key and a removed section.
    let (status, reply) = put(&gw, "max_concurrent_requests", json!(7), &[]).await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        file(&gw).contains("\n    max_concurrent_requests: 7\nroutes:"),
        "{}",
        file(&gw)
    );
    let (status, _) = put(&gw, "breaker", json!({"minimum_requests": null}), &[]).await;
    assert_eq!(status, 200);
    assert!(!file(&gw).contains("minimum_requests"));
    assert_eq!(
        gw.breaker("api").await["thresholds"]["minimum_requests"],
        20,
        "the default again"
    );
    let (status, _) = put(&gw, "retries", json!(null), &[]).await;
    assert_eq!(status, 200);
    assert!(!file(&gw).contains("retries:"));
    assert!(file(&gw).starts_with("listeners:") && file(&gw).contains("# Lenient while we learn."));
}

#[tokio::test]
async fn an_invalid_change_is_refused_with_the_files_own_message_and_nothing_changes() {
    let origin = start_origin(echo("a")).await;
    let gw = Gateway::start(&body(origin.addr())).await;
    let before = file(&gw);
    let generation = gw.admin("GET", "/ready", &[], b"").await.json()["generation"].clone();

    let (status, reply) = put(&gw, "breaker", json!({"failure_rate": 2}), &[]).await;
    assert_eq!(status, 422, "{reply}");
    assert_eq!(reply["code"], "INVALID");
    let error = reply["errors"][0].as_str().expect("error");
    assert!(
        error.contains("upstreams.api.breaker.failure_rate")
            && error.contains("must be a ratio above 0 and at most 1"),
        "{error}"
    );

    let (status, reply) = put(&gw, "breaker", json!({"failure_threshold": 5}), &[]).await;
    assert_eq!(status, 422, "{reply}");
    assert!(
        reply["errors"][0]
            .as_str()
            .expect("error")
            .contains("consecutive_failures"),
        "{reply}"
    );

    let (status, reply) = put(&gw, "breaker", json!([1]), &[]).await;
    assert_eq!(status, 400, "{reply}");
    let (status, reply) = put(&gw, "health_check", json!({"path": "/"}), &[]).await;
    assert_eq!(status, 404, "{reply}");
    let reply = gw
        .admin("PUT", "/api/v1/upstreams/nope/breaker", &[], b"{}")
        .await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["code"], "UPSTREAM_NOT_FOUND");

    assert_eq!(file(&gw), before, "the file is untouched");
    assert_eq!(
        gw.admin("GET", "/ready", &[], b"").await.json()["generation"],
        generation,
        "nothing was applied"
    );
    assert_eq!(gw.breaker("api").await["thresholds"]["failure_rate"], 0.5);
}

#[tokio::test]
async fn a_concurrent_edit_of_the_file_is_refused_naming_its_new_hash() {
    const TOKEN: &str = "settings-token-0123456789";
    let origin = start_origin(echo("a")).await;
    let gw = Gateway::start_with(
        &format!("server:\n  watch_config: false\n{}", body(origin.addr())),
        Options {
            env: &[("GATEWAY_TEST_ADMIN_TOKEN", TOKEN)],
            admin_keys: Some("token_env: GATEWAY_TEST_ADMIN_TOKEN"),
            ..Options::default()
        },
    )
    .await;
    let auth = format!("Bearer {TOKEN}");
    let auth = [("authorization", auth.as_str())];

    // The token guards this endpoint like every other.
    let (status, _) = put(&gw, "breaker", json!({"failure_rate": 0.3}), &[]).await;
    assert_eq!(status, 401);

    let read = gw
        .admin("GET", "/api/v1/upstreams/api/breaker", &auth, b"")
        .await
        .json();
    let old_hash = read["file_hash"].as_str().expect("hash").to_string();

    // Someone edits the file; the gateway has not reloaded it (watching is off).
    let edited = file(&gw).replace("minimum_requests: 30", "minimum_requests: 40");
    std::fs::write(&gw.config_path, &edited).expect("edit");
    let (status, reply) = put(&gw, "breaker", json!({"failure_rate": 0.3}), &auth).await;
    assert_eq!(status, 409, "{reply}");
    assert_eq!(reply["code"], "CONFLICT");
    let new_hash = reply["file_hash"].as_str().expect("hash").to_string();
    assert_ne!(new_hash, old_hash);
    assert_eq!(file(&gw), edited, "the other edit is not overwritten");

    // Once reloaded, the file's hash is the one the 409 named; a client still holding
    // the old one is refused, one with the new one goes through.
    let reload = gw.admin("POST", "/admin/reload", &auth, b"").await.json();
    assert_eq!(reload["result"], "applied", "{reload}");
    let read = gw
        .admin("GET", "/api/v1/upstreams/api/breaker", &auth, b"")
        .await
        .json();
    assert_eq!(read["file_hash"], new_hash.as_str());
    let stale = [auth[0], ("if-match", old_hash.as_str())];
    let (status, _) = put(&gw, "breaker", json!({"failure_rate": 0.3}), &stale).await;
    assert_eq!(status, 409);
    let fresh = [auth[0], ("if-match", new_hash.as_str())];
    let (status, reply) = put(&gw, "breaker", json!({"failure_rate": 0.3}), &fresh).await;
    assert_eq!(status, 200, "{reply}");
    let now = file(&gw);
    assert!(now.contains("minimum_requests: 40") && now.contains("failure_rate: 0.3   # half"));
}
