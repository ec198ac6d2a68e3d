//! gRPC on the request path: a call is judged on the `grpc-status` it ends with (in
//! its trailers, or in the head of a Trailers-Only response), and a gRPC client that
//! the gateway answers itself gets a Trailers-Only response it can act on
//! (`grpc-status`, `grpc-message`, `grpc-retry-pushback-ms`), not an HTTP error page.

use std::time::Duration;

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::http::HttpTask;

use super::call::Call;
use crate::grpc::{Code, encode_message, is_grpc_content_type};

const STATUS: &str = "grpc-status";
const MESSAGE: &str = "grpc-message";
const PUSHBACK: &str = "grpc-retry-pushback-ms";

/// The response head arrived: a gRPC answer (HTTP 200, a gRPC content type) is judged
/// on its status, which is either here (Trailers-Only) or still to come.
pub fn at_head(call: &mut Call, head: &ResponseHeader) {
    let grpc = head.status == 200
        && head
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| is_grpc_content_type(v.as_bytes()));
    if grpc {
        let status = head
            .headers
            .get(STATUS)
            .map(|v| Code::from_header(v.as_bytes()));
        call.on_grpc_head(status);
    }
}

/// The trailers of a gRPC answer arrived; without `grpc-status` the call is UNKNOWN.
pub fn at_trailers(call: &mut Call, trailers: &http::HeaderMap) {
    let status = trailers
        .get(STATUS)
        .map_or(Code::UNKNOWN, |v| Code::from_header(v.as_bytes()));
    call.on_grpc_trailers(status);
}

/// Whether the client speaks gRPC: its request has a gRPC content type.
pub fn is_grpc_request(request: &RequestHeader) -> bool {
    request
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| is_grpc_content_type(v.as_bytes()))
}

/// An answer the gateway gives a gRPC client itself.
pub struct Answer<'a> {
    pub code: Code,
    pub message: &'a str,
    /// When the client may try again (`grpc-retry-pushback-ms`).
    pub pushback: Option<Duration>,
    /// Other headers (the fallback marker, the request id).
    pub headers: Vec<(&'static str, String)>,
}

/// Writes `answer` as a Trailers-Only response: HTTP 200 and one header block that
/// ends the stream (END_STREAM on the HEADERS frame: gRPC clients read a status only
/// from a block that ends the stream) and carries the status, as gRPC servers do for a
/// call that fails before any message. A pushback of zero would tell clients to retry
/// at once: it is left out.
pub async fn write_trailers_only(session: &mut Session, answer: Answer<'_>) -> Result<()> {
    let mut header = ResponseHeader::build(200, Some(answer.headers.len() + 5))?;
    header.insert_header(http::header::CONTENT_TYPE, "application/grpc")?;
    header.insert_header(STATUS, answer.code.value().to_string())?;
    header.insert_header(MESSAGE, encode_message(answer.message))?;
    if let Some(pushback) = answer.pushback.filter(|p| !p.is_zero()) {
        header.insert_header(PUSHBACK, pushback.as_millis().to_string())?;
    }
    for (name, value) in answer.headers {
        header.insert_header(name, value)?;
    }
    if !session.is_http2() {
        // HTTP/1.1 has no END_STREAM: an empty body, framed, keeps the connection.
        header.insert_header(http::header::CONTENT_LENGTH, "0")?;
    }
    // `write_response_header` drops its end-of-stream flag; a task keeps it.
    session
        .write_response_tasks(vec![HttpTask::Header(Box::new(header), true)])
        .await
        .map(|_| ())
}
