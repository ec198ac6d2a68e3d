//! The request path. Read top to bottom, it is the story of one request:
//!
//! 1. `new_ctx`: take the current runtime snapshot; it serves this request to the end.
//! 2. `request_filter`: give the request an id and find its route (or answer 404).
//! 3. `upstream_peer`: pick an endpoint of the route's upstream.
//! 4. `upstream_request_filter`: rewrite path and host, add forwarding headers.
//! 5. `response_filter`: tag the response with the request id.
//! 6. `fail_to_proxy`: turn a failure into a JSON error with a stable code.
//! 7. `logging`: one access-log line.

mod headers;
mod respond;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::FailToProxy;

use crate::drain::{InFlight, InFlightGuard};
use crate::routing::Route;
use crate::runtime::{Runtime, RuntimeHandle};
use crate::upstream::EndpointLease;

pub use headers::REQUEST_ID;
pub use respond::GatewayError;

/// The proxy: shared by all requests, holds nothing that changes on reload itself.
pub struct Gateway {
    runtime: Arc<RuntimeHandle>,
    in_flight: Arc<InFlight>,
}

impl Gateway {
    pub fn new(runtime: Arc<RuntimeHandle>, in_flight: Arc<InFlight>) -> Self {
        Self { runtime, in_flight }
    }
}

/// What one request knows as it moves through the phases.
pub struct RequestCtx {
    runtime: Arc<Runtime>,
    started: Instant,
    request_id: String,
    route: Option<Arc<Route>>,
    lease: Option<EndpointLease>,
    error: Option<GatewayError>,
    _in_flight: InFlightGuard,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            runtime: self.runtime.snapshot(),
            started: Instant::now(),
            request_id: String::new(),
            route: None,
            lease: None,
            error: None,
            _in_flight: self.in_flight.enter(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        ctx.request_id = headers::request_id(req.headers.get(REQUEST_ID).map(|v| v.as_bytes()));
        let host = request_host(req);
        let route = ctx.runtime.routes.find(host, req.uri.path(), &req.method);
        match route {
            Some(route) => {
                ctx.route = Some(route);
                Ok(false)
            }
            None => {
                ctx.error = Some(GatewayError::RouteNotFound);
                respond::write_error(session, GatewayError::RouteNotFound, &ctx.request_id).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let route = ctx
            .route
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route chosen"))?;
        let lease = route.upstream.lease();
        let peer = lease.peer();
        ctx.lease = Some(lease);
        Ok(peer)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(route) = &ctx.route else {
            return Ok(());
        };
        if route.spec.strip_prefix {
            let original = upstream.uri.path_and_query().map_or("/", |pq| pq.as_str());
            let rewritten = route.upstream_path_and_query(original);
            let uri = rewritten.parse().or_err(
                ErrorType::InternalError,
                "rewritten path is not a valid URI",
            )?;
            upstream.set_uri(uri);
        }
        let original_host = request_host(session.req_header()).map(str::to_string);
        if let Some(host) = &route.spec.host_rewrite {
            upstream.insert_header("host", host)?;
        }
        let client = session.client_addr().and_then(|a| a.as_inet()).copied();
        headers::add_forwarding(upstream, client, original_host.as_deref())?;
        upstream.insert_header(REQUEST_ID, &ctx.request_id)?;
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        response.insert_header(REQUEST_ID, &ctx.request_id)?;
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let error = GatewayError::from_proxy_error(e);
        ctx.error = error;
        // Once the response head is out, the only honest signal left is closing the connection.
        let can_respond = session.response_written().is_none();
        let status = match error {
            Some(error) if can_respond => {
                if ctx.request_id.is_empty() {
                    ctx.request_id = headers::request_id(None);
                }
                if let Err(write_error) =
                    respond::write_error(session, error, &ctx.request_id).await
                {
                    tracing::debug!(%write_error, "could not send error response");
                }
                error.status()
            }
            _ => 0,
        };
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if !ctx.runtime.config.server.access_log {
            return;
        }
        let req = session.req_header();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        tracing::info!(
            target: "gateway::access",
            request_id = %ctx.request_id,
            client = ?session.client_addr().and_then(|a| a.as_inet()),
            method = %req.method,
            host = request_host(req).unwrap_or(""),
            path = req.uri.path(),
            status,
            route = ctx.route.as_ref().map_or("", |r| r.spec.name.as_str()),
            upstream = ctx.route.as_ref().map_or("", |r| r.upstream.name()),
            endpoint = ?ctx.lease.as_ref().map(|l| l.endpoint().addr),
            code = ctx.error.map_or("", GatewayError::code),
            error = e.map(|e| e.to_string()),
            duration_ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
    }
}

/// The host a client asked for: the Host header, or the authority of an absolute URI.
fn request_host(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
}
