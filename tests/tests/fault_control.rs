//! The demo's fault injection (`POST /_fault` on a simulated upstream), as a user drives
//! it: query parameters or a JSON body, and a 400 naming what is accepted for anything
//! else, never a 200 that changed nothing. Real origin, real gateway in front.

use gateway_tests::{Gateway, echo, http, one_upstream, start_origin};

async fn fault(addr: std::net::SocketAddr, target: &str, body: &[u8]) -> http::Response {
    let headers: &[(&str, &str)] = if body.is_empty() {
        &[]
    } else {
        &[("content-type", "application/json")]
    };
    http::Conn::connect(addr)
        .await
        .expect("connect")
        .request("POST", target, headers, body)
        .await
        .expect("answer")
}

#[tokio::test]
async fn a_json_body_sets_faults_and_what_is_not_understood_is_refused() {
    let origin = start_origin(echo("svc")).await;
    let gw = Gateway::start(&one_upstream(&[origin.addr()], "")).await;
    assert_eq!(gw.get("/").await.status, 200);

    let r = fault(
        origin.addr(),
        "/_fault",
        br#"{"is_healthy": false, "response_time_ms": 20}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let settings = r.json();
    assert_eq!(settings["failure_rate"], 1.0);
    assert_eq!(settings["latency_ms"], 20);
    assert_eq!(
        gw.get("/").await.status,
        500,
        "unhealthy: every request fails"
    );

    let r = fault(origin.addr(), "/_fault", br#"{"failure_rate": 0.7}"#).await;
    assert_eq!(r.json()["failure_rate"], 0.7);
    let r = fault(origin.addr(), "/_fault", br#"{"is_healthy": true}"#).await;
    assert_eq!(r.json()["failure_rate"], 0.0);
    assert_eq!(gw.get("/").await.status, 200);

    // Refused, and nothing changed: an unknown key, a bad value, a body that is not an
    // object, an unknown query parameter.
    for (target, body, says) in [
        (
            "/_fault",
            &br#"{"failure_rate": 1, "chaos": true}"#[..],
            "unknown setting `chaos`",
        ),
        ("/_fault", &br#"{"failure_rate": 7}"#[..], "from 0 to 1"),
        ("/_fault", &b"[1, 2]"[..], "JSON object"),
        (
            "/_fault?failurerate=1",
            &b""[..],
            "unknown setting `failurerate`",
        ),
    ] {
        let r = fault(origin.addr(), target, body).await;
        assert_eq!(r.status, 400, "{target} {}", String::from_utf8_lossy(body));
        let reply = r.json();
        assert!(
            reply["error"].as_str().is_some_and(|e| e.contains(says)),
            "{reply}"
        );
        assert!(
            reply["accepted"]
                .as_array()
                .is_some_and(|keys| keys.iter().any(|k| k == "is_healthy")),
            "{reply}"
        );
    }
    assert_eq!(
        gw.get("/").await.status,
        200,
        "the refused changes changed nothing"
    );
}
