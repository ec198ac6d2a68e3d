//! The admin listener: health, readiness, metrics, breaker state and control, and a
//! live event stream. Apart from traffic; loopback by default; bearer token when set.
//!
//! Every request must name an allowed `Host` (`host.rs`, against DNS rebinding); every
//! state change must come from the same origin and carry `Content-Type:
//! application/json` (`state_change.rs`, against cross-site requests) and is written to
//! the audit log (`audit.rs`). Refusals are counted and logged at most once a second per
//! kind (`refusal.rs`).
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | /health | liveness (no token needed) |
//! | GET | /ready | readiness (no token needed) |
//! | GET | /metrics | Prometheus text exposition |
//! | GET | /admin/config | hash, generation, source of the config in service, last reload |
//! | POST | /admin/reload | reload the config file now; answers with the result or every error |
//! | GET | /health/upstreams | per upstream: status word, breaker state, endpoints |
//! | GET | /api/v1/breakers | every breaker |
//! | GET | /api/v1/breakers/{upstream} | one breaker, with recent transitions |
//! | PUT | /api/v1/breakers/{upstream}/state | force open, disable, metrics-only, automatic |
//! | POST | /api/v1/breakers/{upstream}/reset | back to closed, window cleared |
//! | GET | /api/v1/upstreams/{upstream}/{section} | breaker, retries, outlier_detection or max_concurrent_requests as the file has it |
//! | PUT | /api/v1/upstreams/{upstream}/{section} | change it: validated, applied, written back to the file |
//! | GET | /api/v1/events | Server-Sent Events: transitions, ejections, health |
//! | GET | /api/v1/events/ws | the same events over WebSocket |

mod api;
mod audit;
mod auth;
mod host;
mod refusal;
mod settings;
mod state_change;
mod stream;
mod websocket;

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::apps::{HttpServerApp, ReusedHttpStream};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::services::listening::Service;
use serde_json::{Value, json};

pub use refusal::REASONS as REFUSAL_REASONS;

use crate::breaker::Mode;
use crate::config::AdminSpec;
use crate::operator_modes::Override;
use crate::reload::{ReloadResult, Reloader};
use crate::runtime::RuntimeHandle;
use audit::Token;
use host::HostPolicy;
use refusal::{Refusal, RefusalLog};

pub struct AdminApp {
    runtime: Arc<RuntimeHandle>,
    /// None when the config did not come from a file (the demo).
    reloader: Option<Arc<Reloader>>,
    token: Option<String>,
    hosts: HostPolicy,
    refusals: RefusalLog,
    /// Live event stream subscribers (SSE and WebSocket), bounded.
    subscribers: Arc<stream::Subscribers>,
}

/// The admin service, bound to the configured admin address.
pub fn service(
    runtime: Arc<RuntimeHandle>,
    reloader: Option<Arc<Reloader>>,
    admin: &AdminSpec,
) -> Service<AdminApp> {
    runtime.metrics.admin_refusal_reasons(&REFUSAL_REASONS);
    let app = AdminApp {
        reloader,
        token: admin.token.clone(),
        hosts: HostPolicy::new(admin),
        refusals: RefusalLog::default(),
        subscribers: Arc::new(stream::Subscribers::new(&runtime.metrics)),
        runtime,
    };
    let mut service = Service::new("admin".to_string(), app);
    service.add_tcp(&admin.address.to_string());
    service
}

enum Reply {
    Json(u16, Value),
    Text(u16, &'static str, String),
    /// Server-Sent Events, holding a subscriber's place.
    Stream(stream::Subscription),
    /// The same events over WebSocket: the handshake's accept key, and the place.
    WebSocket(String, stream::Subscription),
}

const MAX_BODY: usize = 64 * 1024;

async fn read_body(session: &mut ServerSession) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = session.read_request_body().await {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_BODY {
            return None;
        }
    }
    Some(body)
}

impl Reply {
    fn status(&self) -> u16 {
        match self {
            Self::Json(status, _) | Self::Text(status, ..) => *status,
            Self::Stream(_) => 200,
            Self::WebSocket(..) => 101,
        }
    }
}

/// Who sent a request, and where it arrived.
struct Peer {
    /// The client's address, for logs.
    address: String,
    /// The address the connection was accepted on.
    local: Option<IpAddr>,
}

impl Peer {
    fn of(session: &ServerSession) -> Self {
        Self {
            address: session
                .client_addr()
                .map_or_else(|| "unknown".to_string(), ToString::to_string),
            local: session
                .server_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
        }
    }
}

impl AdminApp {
    fn token_presented(&self, request: &RequestHeader) -> Token {
        let Some(token) = &self.token else {
            return Token::NotRequired;
        };
        match request.headers.get(http::header::AUTHORIZATION) {
            None => Token::Absent,
            Some(header) if auth::authorized(Some(header.as_bytes()), token) => Token::Valid,
            Some(_) => Token::Invalid,
        }
    }

    /// Host first (every request), then the token (all but the probes), then what a
    /// state change must carry.
    fn admit(&self, request: &RequestHeader, peer: &Peer, token: Token) -> Result<(), Refusal> {
        let host = self.hosts.check(request, peer.local)?;
        let open = request.method == http::Method::GET
            && matches!(request.uri.path(), "/health" | "/ready");
        if !open && matches!(token, Token::Absent | Token::Invalid) {
            return Err(Refusal::Unauthorized);
        }
        if state_change::is_state_change(&request.method) {
            state_change::check(request, host.as_ref(), &self.hosts)?;
        } else if request.uri.path() == "/api/v1/events/ws" {
            // A browser opens a WebSocket to any address for any page: only the admin's
            // own origin (or an allowed host's) may read the events this way.
            state_change::check_origin(request, host.as_ref(), &self.hosts)?;
        }
        Ok(())
    }

    async fn handle(&self, session: &mut ServerSession, peer: &Peer) -> Reply {
        let request = session.req_header();
        let token = self.token_presented(request);
        let refused = self.admit(request, peer, token).err();
        let reply = match refused {
            Some(refusal) => {
                let (method, path) = (request.method.as_str(), request.uri.path());
                self.refusals.report(&refusal, &peer.address, method, path);
                self.runtime.metrics.admin_refused(refusal.reason());
                // Close after answering: a body sent with a refused request stays unread.
                session.set_keepalive(None);
                Reply::Json(refusal.status(), refusal.body())
            }
            None => self.serve(session, peer, token).await,
        };
        let request = session.req_header();
        if state_change::is_state_change(&request.method) {
            let result = match &reply {
                Reply::Json(_, body) => audit::result_word(body),
                _ => "ok".to_string(),
            };
            audit::record(&audit::Entry {
                peer: &peer.address,
                method: request.method.as_str(),
                path: request.uri.path(),
                token,
                status: reply.status(),
                result: &result,
            });
        }
        reply
    }

    async fn serve(&self, session: &mut ServerSession, peer: &Peer, token: Token) -> Reply {
        let req = session.req_header();
        let method = req.method.as_str().to_string();
        let path = req.uri.path().to_string();
        let runtime = self.runtime.snapshot();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let upstream = |name: &str| runtime.upstreams.get(name).cloned();
        let not_found = |name: &str| {
            Reply::Json(
                404,
                json!({ "code": "UPSTREAM_NOT_FOUND", "message": format!("no upstream named `{name}`") }),
            )
        };
        match (method.as_str(), segments.as_slice()) {
            ("GET", ["health"]) => Reply::Json(200, json!({ "status": "ok" })),
            ("GET", ["ready"]) => Reply::Json(
                200,
                json!({ "status": "ready", "generation": runtime.generation, "pid": std::process::id() }),
            ),
            ("GET", ["metrics"]) => Reply::Text(
                200,
                "text/plain; version=0.0.4",
                self.runtime
                    .metrics
                    .render(|gauges| runtime.report_state(gauges)),
            ),
            ("GET", ["admin", "config"]) => Reply::Json(
                200,
                json!({
                    "source": runtime.config.source.display().to_string(),
                    "hash": runtime.config.hash,
                    "generation": runtime.generation,
                    "upstreams": runtime.upstreams.keys().collect::<Vec<_>>(),
                    "routes": runtime.routes.len(),
                    "last_reload": self.reloader.as_ref().and_then(|r| r.last()),
                }),
            ),
            ("POST", ["admin", "reload"]) => match &self.reloader {
                Some(reloader) => {
                    let result = reloader.reload("api");
                    let status = if matches!(result, ReloadResult::Failed { .. }) {
                        422
                    } else {
                        200
                    };
                    Reply::Json(status, result.to_json())
                }
                None => Reply::Json(
                    409,
                    json!({ "code": "NO_CONFIG_FILE", "message": "this gateway runs an embedded config; there is no file to reload" }),
                ),
            },
            ("GET", ["health", "upstreams"]) => Reply::Json(
                200,
                json!(
                    runtime
                        .upstreams
                        .values()
                        .map(|u| api::upstream_health(u, &self.runtime))
                        .collect::<Vec<_>>()
                ),
            ),
            ("GET", ["api", "v1", "breakers"]) => Reply::Json(
                200,
                json!(
                    runtime
                        .upstreams
                        .values()
                        .map(|u| api::breaker(u, &self.runtime))
                        .collect::<Vec<_>>()
                ),
            ),
            ("GET", ["api", "v1", "breakers", name]) => match upstream(name) {
                Some(u) => Reply::Json(200, api::breaker(&u, &self.runtime)),
                None => not_found(name),
            },
            ("PUT", ["api", "v1", "breakers", name, "state"]) => {
                let Some(u) = upstream(name) else {
                    return not_found(name);
                };
                let Some(body) = read_body(session).await else {
                    return Reply::Json(413, json!({ "code": "BODY_TOO_LARGE" }));
                };
                let mode = match api::requested_mode(&body) {
                    Ok(mode) => mode,
                    Err(message) => {
                        return Reply::Json(
                            400,
                            json!({ "code": "BAD_REQUEST", "message": message }),
                        );
                    }
                };
                // `automatic` clears the override: the file's mode applies again.
                let value = (mode != Mode::Automatic).then(|| Override {
                    mode,
                    since_unix_ms: crate::operator_modes::now_unix_ms(),
                    by: peer.address.clone(),
                    token: token == Token::Valid,
                });
                match self.runtime.override_mode(&u, value) {
                    Ok(()) => {
                        tracing::warn!(target: "gateway::admin", upstream = %name, mode = mode.as_str(), "breaker mode set by operator");
                        Reply::Json(200, api::breaker(&u, &self.runtime))
                    }
                    Err(e) => not_kept(&e),
                }
            }
            ("POST", ["api", "v1", "breakers", name, "reset"]) => match upstream(name) {
                Some(u) => match self.runtime.reset(&u, &peer.address) {
                    Ok(()) => {
                        tracing::warn!(target: "gateway::admin", upstream = %name, "breaker reset by operator");
                        Reply::Json(200, api::breaker(&u, &self.runtime))
                    }
                    Err(e) => not_kept(&e),
                },
                None => not_found(name),
            },
            ("GET", ["api", "v1", "upstreams", name, section]) => {
                settings::read(&runtime, name, section)
            }
            ("PUT", ["api", "v1", "upstreams", name, section]) => {
                let Some(reloader) = &self.reloader else {
                    return Reply::Json(
                        409,
                        json!({ "code": "NO_CONFIG_FILE", "message": "this gateway runs an embedded config; there is no file to write settings to" }),
                    );
                };
                let if_match = match session.req_header().headers.get(http::header::IF_MATCH) {
                    None => None,
                    Some(value) => match value.to_str() {
                        Ok(text) => Some(text.to_string()),
                        Err(_) => {
                            return Reply::Json(
                                400,
                                json!({ "code": "BAD_REQUEST", "message": "If-Match is not a file hash" }),
                            );
                        }
                    },
                };
                let Some(body) = read_body(session).await else {
                    return Reply::Json(413, json!({ "code": "BODY_TOO_LARGE" }));
                };
                let caller = settings::Caller {
                    peer: &peer.address,
                    token,
                };
                settings::write(reloader, name, section, &body, if_match.as_deref(), &caller)
            }
            ("GET", ["api", "v1", "events"]) => match self.subscribers.join() {
                Some(subscription) => Reply::Stream(subscription),
                None => too_many_subscribers(),
            },
            ("GET", ["api", "v1", "events", "ws"]) => {
                let accept = match websocket::accept(session.req_header()) {
                    Ok(accept) => accept,
                    Err(message) => {
                        return Reply::Json(
                            400,
                            json!({ "code": "BAD_REQUEST", "message": message }),
                        );
                    }
                };
                match self.subscribers.join() {
                    Some(subscription) => Reply::WebSocket(accept, subscription),
                    None => too_many_subscribers(),
                }
            }
            _ => Reply::Json(
                404,
                json!({ "code": "NOT_FOUND", "message": format!("no admin endpoint {method} {path}") }),
            ),
        }
    }
}

/// Every place on the event stream is taken.
fn too_many_subscribers() -> Reply {
    Reply::Json(
        503,
        json!({
            "code": "TOO_MANY_SUBSCRIBERS",
            "message": format!("at most {} event stream subscribers at once", stream::MAX_SUBSCRIBERS),
        }),
    )
}

/// An override that could not be written to the state directory was not made.
fn not_kept(e: &crate::operator_modes::StateError) -> Reply {
    tracing::error!(target: "gateway::admin", error = %e, "breaker override not kept");
    Reply::Json(
        500,
        json!({ "code": "STATE_NOT_KEPT", "message": format!("{e}; nothing was changed") }),
    )
}

async fn write(
    session: &mut ServerSession,
    status: u16,
    content_type: &str,
    body: Vec<u8>,
) -> bool {
    let Ok(mut header) = ResponseHeader::build(status, Some(4)) else {
        return false;
    };
    let ok = header.insert_header("content-type", content_type).is_ok()
        && header
            .insert_header("content-length", body.len().to_string())
            .is_ok()
        && header.insert_header("cache-control", "no-store").is_ok()
        && (status != 401 || header.insert_header("www-authenticate", "Bearer").is_ok());
    ok && session
        .write_response_header(Box::new(header))
        .await
        .is_ok()
        && session
            .write_response_body(Bytes::from(body), true)
            .await
            .is_ok()
}

#[async_trait]
impl HttpServerApp for AdminApp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !matches!(session.read_request().await, Ok(true)) {
            return None;
        }
        let peer = Peer::of(&session);
        let written = match self.handle(&mut session, &peer).await {
            Reply::Json(status, body) => {
                write(
                    &mut session,
                    status,
                    "application/json",
                    body.to_string().into_bytes(),
                )
                .await
            }
            Reply::Text(status, content_type, body) => {
                write(&mut session, status, content_type, body.into_bytes()).await
            }
            Reply::Stream(subscription) => {
                stream::serve(&mut session, &self.runtime.events, subscription, shutdown).await;
                return None;
            }
            Reply::WebSocket(accept, subscription) => {
                websocket::serve(
                    &mut session,
                    accept,
                    &self.runtime.events,
                    subscription,
                    shutdown,
                )
                .await;
                return None;
            }
        };
        if !written {
            return None;
        }
        let settings = pingora::apps::HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(stream) => stream.map(|s| ReusedHttpStream::from_reusable_stream(s, settings)),
            Err(_) => None,
        }
    }
}
