//! gRPC at the edge (docs/OPERATIONS.md, "gRPC"): a real tonic server behind the
//! gateway and a real tonic client in front of it. Calls are judged on their
//! `grpc-status`; while the breaker is open the client library gets UNAVAILABLE with
//! the gateway's message and a retry pushback; gateway errors arrive as gRPC statuses;
//! over h2c and over TLS with ALPN h2.

use std::net::SocketAddr;
use std::pin::Pin;

use tokio_stream::Stream;
use tonic::transport::{Channel, ClientTlsConfig, Server};
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use gateway_tests::Gateway;
use gateway_tests::tls::Ca;

/// Answers by the requested service's name: `ok`, `unavailable`, `not_found`;
/// `watch` sends two messages then ends with UNAVAILABLE.
struct Scripted;

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

fn serving() -> HealthCheckResponse {
    HealthCheckResponse {
        status: ServingStatus::Serving as i32,
    }
}

#[tonic::async_trait]
impl Health for Scripted {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        match request.into_inner().service.as_str() {
            "unavailable" => Err(Status::unavailable("the origin is draining")),
            "not_found" => Err(Status::not_found("no such service")),
            _ => Ok(Response::new(serving())),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let items = vec![
            Ok(serving()),
            Ok(serving()),
            Err(Status::unavailable("stream broke")),
        ];
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }
}

async fn start_grpc_origin() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        Server::builder()
            .add_service(HealthServer::new(Scripted))
            .serve_with_incoming(incoming),
    );
    addr
}

fn body(origin: SocketAddr, breaker: &str) -> String {
    format!(
        "upstreams:\n  api:\n    endpoints: [\"{origin}\"]\n    protocol: http2\n    breaker: {breaker}\nroutes:\n  - {{ match: {{ path_prefix: /grpc.health.v1.Health }}, upstream: api }}\n"
    )
}

async fn h2c_client(gw: &Gateway) -> HealthClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", gw.listen))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    HealthClient::new(channel)
}

async fn check(client: &mut HealthClient<Channel>, service: &str) -> Result<(), Status> {
    client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|_| ())
}

/// Runs a server-streaming `watch` to its end: the messages received, and the status it
/// ended with (None: it ended OK).
async fn watch_to_end(client: &mut HealthClient<Channel>) -> (usize, Option<Status>) {
    let mut stream = client
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch starts")
        .into_inner();
    let mut messages = 0;
    loop {
        match stream.message().await {
            Ok(Some(_)) => messages += 1,
            Ok(None) => return (messages, None),
            Err(status) => return (messages, Some(status)),
        }
    }
}

#[tokio::test]
async fn unavailable_opens_the_breaker_and_the_client_gets_a_grpc_answer() {
    let origin = start_grpc_origin().await;
    let gw = Gateway::start_with_listener(
        &body(origin, "{ consecutive_failures: 3, open_duration: 30s }"),
        "    http2: true\n",
    )
    .await;
    let mut client = h2c_client(&gw).await;
    // OK and NOT_FOUND are answers, not failures (the default grpc_statuses).
    for _ in 0..4 {
        check(&mut client, "ok").await.expect("served");
        let e = check(&mut client, "not_found")
            .await
            .expect_err("not found");
        assert_eq!(e.code(), Code::NotFound);
    }
    let view = gw.breaker("api").await;
    assert_eq!(view["state"], "closed", "{view}");
    assert_eq!(
        view["window"]["calls"], 8,
        "each call recorded once: {view}"
    );
    assert_eq!(view["window"]["failures"], 0, "{view}");
    assert_eq!(
        gw.metric(
            "gateway_upstream_grpc_responses_total{grpc_status=\"NOT_FOUND\",upstream=\"api\"}"
        )
        .await,
        4.0
    );
    // UNAVAILABLE (HTTP 200 with grpc-status 14 in the trailers) is.
    for _ in 0..3 {
        let e = check(&mut client, "unavailable")
            .await
            .expect_err("unavailable");
        assert_eq!(e.code(), Code::Unavailable);
        assert_eq!(
            e.message(),
            "the origin is draining",
            "the origin's own answer"
        );
    }
    let view = gw.breaker("api").await;
    assert_eq!(view["state"], "open", "{view}");
    let t = view["transitions"]
        .as_array()
        .and_then(|t| t.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(t["top_failure"]["kind"], "grpc UNAVAILABLE", "{view}");

    // Open: the gateway answers, in gRPC's terms.
    let e = check(&mut client, "ok").await.expect_err("open");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message()
            .contains("circuit breaker for upstream `api` is open"),
        "{e:?}"
    );
    let pushback: u64 = e
        .metadata()
        .get("grpc-retry-pushback-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("pushback: {e:?}"));
    assert!(pushback > 25_000 && pushback <= 30_000, "{pushback}");
    assert_eq!(
        e.metadata()
            .get("x-gateway-fallback")
            .and_then(|v| v.to_str().ok()),
        Some("circuit_open")
    );
}

#[tokio::test]
async fn a_streaming_call_that_ends_in_an_error_counts_once() {
    let origin = start_grpc_origin().await;
    let gw = Gateway::start_with_listener(
        &body(origin, "{ consecutive_failures: 2, open_duration: 30s }"),
        "    http2: true\n",
    )
    .await;
    let mut client = h2c_client(&gw).await;
    let (messages, status) = watch_to_end(&mut client).await;
    assert_eq!(
        (messages, status.map(|s| s.code())),
        (2, Some(Code::Unavailable))
    );
    let view = gw.breaker("api").await;
    assert_eq!(view["window"]["calls"], 1, "one call, counted once: {view}");
    assert_eq!(view["window"]["failures"], 1, "{view}");
    assert_eq!(view["state"], "closed", "two failures needed: {view}");
}

#[tokio::test]
async fn gateway_errors_reach_a_grpc_client_as_grpc_statuses() {
    let origin = start_grpc_origin().await;
    // No route for the health service: UNIMPLEMENTED, as a gRPC server says for a
    // method it does not have.
    let gw = Gateway::start_with_listener(
        &format!(
            "upstreams:\n  api: {{ endpoints: [\"{origin}\"], protocol: http2 }}\nroutes:\n  - {{ match: {{ path_prefix: /elsewhere }}, upstream: api }}\n"
        ),
        "    http2: true\n",
    )
    .await;
    let mut client = h2c_client(&gw).await;
    let e = check(&mut client, "ok").await.expect_err("no route");
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
    assert!(e.message().contains("no route"), "{e:?}");
    // A static fallback can say what a gRPC client gets.
    let dead = gateway_tests::dead_address();
    let gw = Gateway::start_with_listener(
        &format!(
            "upstreams:\n  api:\n    endpoints: [\"{dead}\"]\n    protocol: http2\n    breaker:\n      consecutive_failures: 1\n      fallback: {{ status: 503, json: {{ down: true }}, grpc_status: RESOURCE_EXHAUSTED, grpc_message: \"try the backup region\" }}\nroutes:\n  - {{ upstream: api }}\n"
        ),
        "    http2: true\n",
    )
    .await;
    let mut client = h2c_client(&gw).await;
    let _ = check(&mut client, "ok").await.expect_err("dead upstream");
    let e = check(&mut client, "ok").await.expect_err("open");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert_eq!(e.message(), "try the backup region");
}

#[tokio::test]
async fn over_tls_with_alpn_h2_the_same_holds() {
    let origin = start_grpc_origin().await;
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("grpc test ca");
    let (cert, key) = ca.leaf(&["localhost"]).write(dir.path(), "leaf");
    let listener = format!(
        "    tls:\n      certificates:\n        - {{ cert: \"{}\", key: \"{}\" }}\n",
        cert.display(),
        key.display()
    );
    let gw = Gateway::start_with_listener(
        &body(origin, "{ consecutive_failures: 1, open_duration: 30s }"),
        &listener,
    )
    .await;
    let tls = ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca.pem()))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://localhost:{}", gw.listen.port()))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("connect over TLS");
    let mut client = HealthClient::new(channel);
    check(&mut client, "ok").await.expect("served over TLS");
    let e = check(&mut client, "unavailable")
        .await
        .expect_err("unavailable");
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(gw.breaker("api").await["state"], "open");
    let e = check(&mut client, "ok").await.expect_err("open");
    assert_eq!(e.code(), Code::Unavailable);
    assert!(
        e.metadata().get("grpc-retry-pushback-ms").is_some(),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_predicate_reads_the_trailers_and_a_fallback_plugin_answers_with_them() {
    let origin = start_grpc_origin().await;
    let plugins = format!(
        "plugins:\n{}{}",
        gateway_tests::plugin_entry(
            "grpc-rules",
            "status-latency-predicate",
            "predicate",
            "config: { failure_statuses: \"500-599\", failure_grpc_statuses: \"14\" }"
        ),
        gateway_tests::plugin_entry("degraded", "degraded-fallback", "fallback", "")
    );
    let gw = Gateway::start_with_listener(
        &format!(
            "{plugins}{}",
            body(
                origin,
                // failure_when counts no gRPC status: only the predicate can open it.
                "{ consecutive_failures: 1, open_duration: 30s, predicate: grpc-rules, failure_when: { grpc_statuses: [] }, fallback: { plugin: degraded } }"
            )
        ),
        "    http2: true\n",
    )
    .await;
    let mut client = h2c_client(&gw).await;
    // The streaming call's status comes in real trailers, after two messages: only a
    // predicate that reads them sees UNAVAILABLE behind the HTTP 200.
    watch_to_end(&mut client).await;
    let view = gw.breaker("api").await;
    assert_eq!(
        view["state"], "open",
        "the predicate judged the trailer: {view}"
    );
    // The fallback plugin answers the gRPC client in trailers.
    let e = check(&mut client, "ok").await.expect_err("open");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert_eq!(e.message(), "degraded: api is circuit_open");
    assert!(
        e.metadata()
            .get("grpc-retry-pushback-ms")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|ms| ms > 25_000),
        "{e:?}"
    );
}

#[tokio::test]
async fn the_gateways_own_grpc_answer_ends_the_stream_in_its_headers() {
    use gateway_tests::h2frame::{
        DATA, END_HEADERS, END_STREAM, HEADERS, frame, header_block, hello,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = start_grpc_origin().await;
    let gw = Gateway::start_with_listener(
        &format!(
            "upstreams:\n  api: {{ endpoints: [\"{origin}\"], protocol: http2 }}\nroutes:\n  - {{ match: {{ path_prefix: /elsewhere }}, upstream: api }}\n"
        ),
        "    http2: true\n",
    )
    .await;
    let mut stream = tokio::net::TcpStream::connect(gw.listen)
        .await
        .expect("connect");
    let fields: Vec<(String, String)> = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/grpc.health.v1.Health/Check"),
        (":authority", "gateway.test"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    let mut out = hello();
    out.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &header_block(&fields),
    ));
    stream.write_all(&out).await.expect("request");
    // Frames until the answer on stream 1: one HEADERS frame that ends the stream
    // (Trailers-Only, as gRPC clients require), no DATA before it.
    loop {
        let mut head = [0u8; 9];
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_exact(&mut head),
        )
        .await
        .expect("a frame in time")
        .expect("read");
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7FFF_FFFF;
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await.expect("payload");
        if id != 1 {
            continue;
        }
        assert_ne!(kind, DATA, "no DATA frame before the status");
        assert_eq!(kind, HEADERS);
        assert_eq!(
            flags & END_STREAM,
            END_STREAM,
            "the HEADERS frame ends the stream"
        );
        break;
    }
}
