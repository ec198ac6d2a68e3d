//! What an exchange counts as, when the upstream has a predicate plugin.
//!
//! A predicate that needs no body is asked as soon as the response head arrives, so
//! its judgement is ready when the body ends. A body-reading one (`inspect_body_bytes`)
//! sees a copy of the first bytes as they stream past — the client gets them
//! unchanged and undelayed — and is asked once the response is complete. A gRPC
//! response is judged once its trailers (its status) arrived, which the predicate can
//! read. Transport errors are judged when they end the exchange. A plugin that fails gets the
//! upstream's `on_plugin_error` policy instead. An exchange outside what the predicate
//! declared at `init` (its `interest`) is never asked about: `failure_when` judges it
//! when the call finishes, at native cost.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;

use super::call::Call;
use crate::plugin::{Exchange, convert, types};
use crate::upstream::classify::{CallResult, Judgement};

/// The response head arrived.
pub fn at_head(call: &mut Call, session: &Session, route: &String, head: &ResponseHeader) {
    let Some(plugin) = &call.predicate else {
        return;
    };
    let wanted =
        plugin
            .interest()
            .wants_response(head.status.as_u16(), &head.headers, call.latency());
    if !wanted {
        return;
    }
    let mut response = convert::response(head);
    let inspects_body = plugin.spec.inspect_body_bytes.is_some();
    if inspects_body || call.awaits_trailers() {
        // Asked once the body (or the trailers) arrived, when the head is no longer at
        // hand.
        if inspects_body {
            response.body_prefix = Some(Vec::new());
        }
        call.inspected = Some((response, head.headers.clone()));
        return;
    }
    // A Trailers-Only gRPC answer is judged on its status, by `failure_when` too when
    // the plugin fails.
    let status = call.result(None);
    let response = Some((response, &head.headers));
    call.judgement = Some(ask(call, session, route, response, None, None, status));
}

/// A gRPC response's trailers arrived: the predicate judges with them readable.
pub fn at_trailers(
    call: &mut Call,
    session: &Session,
    route: &String,
    trailers: &http::HeaderMap,
    result: CallResult,
) {
    if call.predicate.is_none() {
        return;
    }
    if let Some((response, headers)) = call.inspected.take() {
        let response = Some((response, &headers));
        let judgement = ask(call, session, route, response, Some(trailers), None, result);
        call.judgement = Some(judgement);
    }
}

/// A body chunk streams past: keep a copy of it up to the inspection limit.
pub fn body_chunk(call: &mut Call, chunk: &Bytes) {
    let limit = call
        .predicate
        .as_ref()
        .and_then(|p| p.spec.inspect_body_bytes)
        .unwrap_or(0);
    if let Some(prefix) = call
        .inspected
        .as_mut()
        .and_then(|(r, _)| r.body_prefix.as_mut())
    {
        let room = limit.saturating_sub(prefix.len());
        prefix.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
}

/// Whether the judgement waits for the whole response.
pub fn awaits_body(call: &Call) -> bool {
    call.inspected.is_some()
}

/// The exchange ended with `result`: ask the predicate if it has not answered yet.
pub fn at_end(call: &mut Call, session: &Session, route: &String, result: CallResult) {
    if call.predicate.is_none() || !call.is_open() {
        return;
    }
    let transport_wanted = call
        .predicate
        .as_ref()
        .is_some_and(|p| p.interest().wants_transport_errors());
    let judgement = match result {
        CallResult::Transport(error) if transport_wanted => {
            Some(ask(call, session, route, None, None, Some(error), result))
        }
        CallResult::Transport(_) => None,
        CallResult::Response(_) | CallResult::Grpc(_) => match call.inspected.take() {
            Some((response, headers)) => {
                let response = Some((response, &headers));
                Some(ask(call, session, route, response, None, None, result))
            }
            None => call.judgement,
        },
        // The client went away: nothing to judge.
        CallResult::Abandoned => None,
    };
    call.judgement = judgement;
}

fn ask(
    call: &Call,
    session: &Session,
    route: &String,
    response: Option<(types::ResponseInfo, &http::HeaderMap)>,
    trailers: Option<&http::HeaderMap>,
    error: Option<crate::upstream::classify::TransportError>,
    result: CallResult,
) -> Judgement {
    let Some(plugin) = &call.predicate else {
        return call.upstream.spec.failure_when.judge(result);
    };
    let (response, response_headers) = response.unzip();
    let exchange = Exchange {
        request: session.req_header(),
        route,
        upstream: &call.upstream.spec.name,
        response: response_headers,
        trailers,
    };
    let outcome = convert::outcome(response, error, call.latency());
    crate::plugin::judge(plugin, &call.upstream.spec, &outcome, exchange, result)
}
