//! The request path. Read top to bottom, it is the story of one request:
//!
//! 1. `new_ctx`: take the current runtime snapshot; it serves this request to the end.
//! 2. `request_filter`: (when shutting down, end keep-alive with this response) give
//!    the request an id, apply the listener's limits (431 for an oversized header,
//!    keep-alive and body read timeouts), check its Host and bring its path to normal
//!    form (400 otherwise), find its route (or answer 404), refuse a
//!    declared body over the route's limit (413), and ask
//!    the upstream's breaker and bulkhead for admission; a rejected request gets the
//!    fallback (a response, another upstream, or a plugin's answer) and never
//!    touches the upstream. A fallback plugin answers, reroutes the request to
//!    another upstream, or declines (then the built-in fallback answers).
//! 3. `request_body_filter`: count the body as it streams; over the limit, stop (413).
//! 4. `upstream_peer`: pick an endpoint, skipping ejected ones.
//! 5. `upstream_request_filter`: rewrite path and host, add forwarding headers (the
//!    client's own are kept only from a trusted proxy).
//! 6. `upstream_response_filter`: note the upstream's status and how long it took;
//!    a predicate plugin that needs no body judges the exchange now.
//! 7. `upstream_response_body_filter`: a body-reading predicate gets a copy of the
//!    first bytes; at the end of the body, record the outcome in the breaker and
//!    outlier detection, before the client sees the end of it.
//! 8. `response_filter`: tag the response (request id, fallback headers).
//! 9. `fail_to_connect`: record the failed attempt; retry another endpoint if allowed.
//! 10. `fail_to_proxy`: a client over a limit gets 413 / 408 and costs the upstream
//!     nothing; otherwise judge and record the failure, then answer with the static or
//!     plugin fallback, or a JSON error with a stable code.
//! 11. `logging`: judge (a body-reading predicate, now that the body is complete) and
//!     record whatever is not yet recorded (a client that went away counts for
//!     nothing), then one access-log line; the connection's next request header is
//!     timed from its first byte. Every call is recorded exactly once.

mod call;
mod deadline;
mod fallback;
mod grpc;
mod headers;
mod judge;
mod limits;
mod normalize;
mod record;
mod respond;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::{ErrorSource, ErrorType};

use crate::config::{FallbackSpec, ListenerLimits, ListenerSpec};
use crate::drain::{InFlight, InFlightGuard};
use crate::limit::Limit;
use crate::listener::LimitReporter;
use crate::routing::Route;
use crate::runtime::{Runtime, RuntimeHandle};
use crate::upstream::classify::{CallResult, TransportError};

pub use fallback::{FALLBACK_HEADER, FALLBACK_UPSTREAM_HEADER};
pub use headers::REQUEST_ID;
pub use respond::GatewayError;

use call::Call;
use deadline::{Overrun, RequestDeadline};
use fallback::{Admission, FallbackReason, PluginAnswer};
use limits::BodyBudget;

/// The proxy behind one listener: shared by its requests, holds nothing that changes
/// on reload itself.
pub struct Gateway {
    runtime: Arc<RuntimeHandle>,
    in_flight: Arc<InFlight>,
    listener: SocketAddr,
    limits: Arc<LimitReporter>,
}

impl Gateway {
    pub fn new(
        runtime: Arc<RuntimeHandle>,
        in_flight: Arc<InFlight>,
        listener: SocketAddr,
        limits: Arc<LimitReporter>,
    ) -> Self {
        Self {
            runtime,
            in_flight,
            listener,
            limits,
        }
    }
}

/// What one request knows as it moves through the phases.
pub struct RequestCtx {
    runtime: Arc<Runtime>,
    started: Instant,
    request_id: String,
    route: Option<Arc<Route>>,
    call: Option<Call>,
    /// Set when the gateway answered instead of the upstream.
    answered: Option<&'static str>,
    /// This listener's place in the snapshot's `listeners` (None if it left the config).
    listener: Option<usize>,
    /// This listener's limits as of the request's snapshot.
    limits: ListenerLimits,
    body: Option<BodyBudget>,
    /// The limit that ended this request, if one did.
    limit_hit: Option<Limit>,
    /// The route's total deadline and the timeouts Pingora is given for it.
    deadline: RequestDeadline,
    /// The route's upstream turned the request away (for the outcome recording).
    refused: Option<record::Refusal>,
    _in_flight: InFlightGuard,
}

impl RequestCtx {
    /// This listener's settings in the request's snapshot.
    fn listener(&self) -> Option<&ListenerSpec> {
        self.listener
            .and_then(|i| self.runtime.config.listeners.get(i))
    }

    /// Answers a request that broke `limit` before any upstream saw it, and ends the
    /// connection (its remaining bytes are not read).
    async fn refuse(
        &mut self,
        session: &mut Session,
        reporter: &LimitReporter,
        limit: Limit,
        detail: &str,
    ) -> Result<bool> {
        reporter.fired(limit, detail);
        self.limit_hit = Some(limit);
        self.answer_limit(session, limit).await;
        Ok(true)
    }

    async fn answer_limit(&mut self, session: &mut Session, limit: Limit) -> FailToProxy {
        let error = match limit {
            Limit::Headers | Limit::HeaderBytes => GatewayError::HeadersTooLarge,
            Limit::BodyReadTimeout | Limit::HeaderReadTimeout => GatewayError::RequestTimeout,
            Limit::Malformed => GatewayError::BadRequest,
            Limit::RequestTimeout => self.deadline.answer(),
            _ => GatewayError::BodyTooLarge,
        };
        session.set_keepalive(None);
        if self.request_id.is_empty() {
            self.request_id = headers::request_id(None);
        }
        let mut status = 0;
        if session.response_written().is_none() {
            self.answered = Some(error.code());
            if let Err(write_error) = respond::write_error(session, error, &self.request_id).await {
                tracing::debug!(%write_error, "could not send limit response");
            }
            status = error.status();
        }
        if let Some(call) = self.call.as_mut() {
            call.finish(CallResult::Abandoned);
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    /// Asks the upstream's fallback plugin (if any) about this request.
    async fn ask_fallback_plugin(
        &self,
        session: &mut Session,
        upstream: &Arc<crate::upstream::Upstream>,
        reason: FallbackReason,
    ) -> Result<PluginAnswer> {
        let route = route_name(&self.route);
        fallback::ask_plugin(
            session,
            &self.runtime,
            route,
            upstream,
            reason,
            &self.request_id,
        )
        .await
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    /// No downstream modules: Pingora's default installs response compression
    /// (disabled, yet built and run for every request); the gateway compresses nothing.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        let runtime = self.runtime.snapshot();
        let listener = runtime
            .config
            .listeners
            .iter()
            .position(|l| l.address == self.listener);
        let limits = listener
            .and_then(|i| runtime.config.listeners.get(i))
            .map_or_else(ListenerLimits::default, |l| l.limits);
        RequestCtx {
            runtime,
            started: Instant::now(),
            request_id: String::new(),
            route: None,
            call: None,
            answered: None,
            listener,
            limits,
            body: None,
            limit_hit: None,
            deadline: RequestDeadline::default(),
            refused: None,
            _in_flight: self.in_flight.enter(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if session.is_process_shutting_down() {
            // Tell the client this connection ends with this response, so it opens its
            // next one to whichever process still listens instead of racing our close.
            session.set_keepalive(None);
        } else if session.get_keepalive().is_some() {
            // Only where keep-alive is already decided: Pingora turned it off for an
            // HTTP/1.0 client that did not ask, `Connection: close`, and framing RFC 9112
            // §6.1 says must end the connection (Content-Length with Transfer-Encoding).
            let idle = ctx.limits.keepalive_timeout.as_secs();
            session.set_keepalive((idle > 0).then_some(idle));
        }
        let req = session.req_header();
        ctx.request_id = headers::request_id(req.headers.get(REQUEST_ID).map(|v| v.as_bytes()));
        if let Some((limit, detail)) = limits::header_limit(req, &ctx.limits) {
            return ctx.refuse(session, &self.limits, limit, &detail).await;
        }
        let paths = ctx.listener().map(|l| l.paths).unwrap_or_default();
        if let Err(detail) = normalize::request(session.req_header_mut(), paths) {
            let detail = format!("400: {detail}");
            return ctx
                .refuse(session, &self.limits, Limit::Malformed, &detail)
                .await;
        }
        let req = session.req_header();
        let host = normalize::authority(req).and_then(|a| a.route_host());
        let Some(route) = ctx.runtime.routes.find(host, req.uri.path(), &req.method) else {
            ctx.answered = Some(GatewayError::RouteNotFound.code());
            respond::write_error(session, GatewayError::RouteNotFound, &ctx.request_id).await?;
            return Ok(true);
        };
        let budget = BodyBudget::new(&ctx.limits, &route.spec.limits);
        if let Some(length) = budget.declared_over(req) {
            let detail = format!(
                "413: content-length {length}, max_body_bytes is {}",
                budget.max()
            );
            return ctx
                .refuse(session, &self.limits, Limit::BodyBytes, &detail)
                .await;
        }
        ctx.body = Some(budget);
        ctx.deadline =
            RequestDeadline::start(session, &ctx.limits, &route.spec.limits, ctx.started);
        let mut admission = fallback::admit(&ctx.runtime, &route.upstream);
        let recording = self.runtime.recorder.is_some();
        if recording {
            ctx.refused = match &mut admission {
                Admission::Call(call) => {
                    call.recording = true;
                    call.fallback_for
                        .as_ref()
                        .map(|(name, reason)| (name.clone(), reason.as_str()))
                }
                Admission::Respond { reason, .. } => {
                    Some((route.upstream.name().to_string(), reason.as_str()))
                }
            };
        }
        ctx.route = Some(route);
        match admission {
            Admission::Call(call) => {
                if let Some((rejected, reason)) = &call.fallback_for {
                    call.upstream
                        .events
                        .metrics
                        .fallback(rejected, reason.as_str(), "upstream");
                }
                ctx.call = Some(*call);
                Ok(false)
            }
            Admission::Respond { upstream, reason } => {
                match ctx.ask_fallback_plugin(session, &upstream, reason).await? {
                    PluginAnswer::Rerouted(mut call) => {
                        call.recording = recording;
                        ctx.call = Some(*call);
                        return Ok(false);
                    }
                    PluginAnswer::Responded(_) => {}
                    PluginAnswer::Declined => {
                        fallback::respond(session, &upstream, reason, &ctx.request_id).await?;
                    }
                }
                ctx.answered = Some(reason.as_str());
                Ok(true)
            }
        }
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let overrun = Overrun {
            reporter: &self.limits,
            limit_hit: &mut ctx.limit_hit,
        };
        ctx.deadline.on_body(session, end_of_stream, overrun)?;
        let (Some(budget), Some(chunk)) = (ctx.body.as_mut(), body.as_ref()) else {
            return Ok(());
        };
        if budget.take(chunk.len()) {
            return Ok(());
        }
        let detail = format!("413: request body over max_body_bytes ({})", budget.max());
        self.limits.fired(Limit::BodyBytes, &detail);
        ctx.limit_hit = Some(Limit::BodyBytes);
        Error::e_explain(ErrorType::HTTPStatus(413), detail)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let call = ctx
            .call
            .as_mut()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no admitted upstream call"))?;
        let mut peer = call.peer();
        let overrun = Overrun {
            reporter: &self.limits,
            limit_hit: &mut ctx.limit_hit,
        };
        ctx.deadline.bound_peer(&mut peer, overrun)?;
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
        let original_host = normalize::host(session.req_header());
        if let Some(host) = &route.spec.host_rewrite {
            upstream.insert_header("host", host)?;
        }
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let trusted = client.is_some_and(|ip| ctx.listener().is_some_and(|l| l.trusts(ip)));
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        headers::add_forwarding(upstream, client, original_host, tls, trusted)?;
        upstream.insert_header(REQUEST_ID, &ctx.request_id)?;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(call) = ctx
            .call
            .as_mut()
            .filter(|_| !response.status.is_informational())
        {
            call.on_response(response.status.as_u16());
            if let Some(recorder) = self.runtime.recorder.as_ref().filter(|_| call.recording) {
                call.response_headers =
                    crate::outcomes::select_headers(&response.headers, &recorder.headers);
            }
            grpc::at_head(call, response);
            judge::at_head(call, session, route_name(&ctx.route), response);
            // A Trailers-Only gRPC answer is complete in its head, which reaches the
            // client as soon as this returns: record it first.
            if call.grpc_ended() && !judge::awaits_body(call) {
                let result = call.result(None);
                call.finish(result);
            }
        }
        Ok(())
    }

    fn upstream_response_trailer_filter(
        &self,
        session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // A gRPC call's status arrives here: the exchange is over.
        if let Some(call) = ctx.call.as_mut()
            && call.awaits_trailers()
        {
            grpc::at_trailers(call, trailers);
            let result = call.result(None);
            judge::at_trailers(call, session, route_name(&ctx.route), trailers, result);
            call.finish(result);
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        let Some(call) = ctx.call.as_mut() else {
            return Ok(None);
        };
        if let Some(chunk) = body {
            judge::body_chunk(call, chunk);
        }
        // The exchange is over: record it before the client can see the end of it
        // (a body-reading predicate answers in `logging`, once the body is complete).
        if end_of_stream && !judge::awaits_body(call) && !call.awaits_trailers() {
            let result = call.result(None);
            call.finish(result);
        }
        Ok(None)
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        response.insert_header(REQUEST_ID, &ctx.request_id)?;
        if let Some((_, reason)) = ctx.call.as_ref().and_then(|c| c.fallback_for.as_ref()) {
            let upstream = ctx
                .call
                .as_ref()
                .map_or("", |c| c.upstream.name())
                .to_string();
            response.insert_header(FALLBACK_HEADER, reason.as_str())?;
            response.insert_header(FALLBACK_UPSTREAM_HEADER, upstream)?;
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        let overrun = Overrun {
            reporter: &self.limits,
            limit_hit: &mut ctx.limit_hit,
        };
        ctx.deadline.on_response_body(session, overrun)?;
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let idempotent = session.req_header().method.is_idempotent();
        if let Some(call) = ctx.call.as_mut() {
            // The last attempt of a call with a predicate plugin is judged by the plugin
            // in `fail_to_proxy`; attempts that may be retried by `failure_when`.
            if call.predicate.is_some() && !call.may_retry(idempotent) {
                return e;
            }
            call.finish(CallResult::Transport(TransportError::from_error(&e)));
            if call.retry_connect(idempotent) {
                e.set_retry(true);
            }
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if ctx.limit_hit.is_none() {
            ctx.limit_hit = ctx.deadline.limit_of(e, &self.limits);
        }
        if ctx.limit_hit.is_none()
            && e.esource() == &ErrorSource::Downstream
            && e.etype() == &ErrorType::ReadTimedout
        {
            self.limits.fired(
                Limit::BodyReadTimeout,
                "408: no request body bytes within body_read_timeout",
            );
            ctx.limit_hit = Some(Limit::BodyReadTimeout);
        }
        if let Some(limit) = ctx.limit_hit {
            // The client broke a limit: the upstream did nothing wrong and is not judged.
            return ctx.answer_limit(session, limit).await;
        }
        if let Some(call) = ctx.call.as_mut() {
            let result = call.result(Some(e));
            judge::at_end(call, session, route_name(&ctx.route), result);
            call.finish(result);
        }
        let error = GatewayError::from_proxy_error(e);
        // Once the response head is out, the only honest signal left is closing the connection.
        let can_respond = session.response_written().is_none();
        if ctx.request_id.is_empty() {
            ctx.request_id = headers::request_id(None);
        }
        // This connection ends with the answer below; say so in it.
        session.set_keepalive(None);
        let failed_upstream = ctx
            .call
            .as_ref()
            .filter(|_| error.is_some() && e.esource() == &ErrorSource::Upstream && can_respond)
            .map(|c| Arc::clone(&c.upstream));
        let reason = FallbackReason::UpstreamFailed;
        let fallback_status = match failed_upstream {
            Some(upstream) if matches!(upstream.spec.fallback, FallbackSpec::Static(_)) => {
                fallback::respond(session, &upstream, reason, &ctx.request_id)
                    .await
                    .ok()
            }
            Some(upstream) => match ctx.ask_fallback_plugin(session, &upstream, reason).await {
                Ok(PluginAnswer::Responded(status)) => Some(status),
                _ => None,
            },
            None => None,
        };
        if fallback_status.is_some() {
            ctx.answered = Some(reason.as_str());
        }
        let status = match (error, fallback_status) {
            (_, Some(status)) => status,
            (Some(error), None) if can_respond => {
                ctx.answered = Some(error.code());
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
        crate::listener::request_finished();
        if let Some(call) = ctx.call.as_mut() {
            let result = call.result(e);
            judge::at_end(call, session, route_name(&ctx.route), result);
            call.finish(result);
        }
        if let Some(recorder) = &self.runtime.recorder {
            record::write(
                recorder,
                session,
                route_name(&ctx.route),
                &ctx.runtime.config.hash,
                ctx.call.as_ref(),
                ctx.refused.as_ref(),
                ctx.started,
            );
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let route_metrics = ctx
            .route
            .as_ref()
            .map_or(&self.runtime.metrics.unmatched, |r| &r.metrics);
        route_metrics.observe(status, ctx.started.elapsed());
        if !ctx.runtime.config.server.access_log {
            return;
        }
        let req = session.req_header();
        let call = ctx.call.as_ref();
        tracing::info!(
            target: "gateway::access",
            request_id = %ctx.request_id,
            client = ?session.client_addr().and_then(|a| a.as_inet()),
            method = %req.method,
            host = normalize::host(req).unwrap_or(""),
            path = req.uri.path(),
            status,
            route = ctx.route.as_ref().map_or("", |r| r.spec.name.as_str()),
            upstream = call.map_or("", |c| c.upstream.name()),
            endpoint = ?call.and_then(Call::endpoint),
            retries = call.map_or(0, Call::retries),
            answered_by_gateway = ctx.answered.unwrap_or(""),
            error = e.map(|e| e.to_string()),
            duration_ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
    }
}

/// The matched route's name; empty before one matched.
fn route_name(route: &Option<Arc<Route>>) -> &String {
    static NO_ROUTE: String = String::new();
    route.as_ref().map_or(&NO_ROUTE, |r| &r.spec.name)
}
