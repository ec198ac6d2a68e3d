//! Responses the gateway writes itself: JSON bodies with a stable `code`.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::{ErrorSource, ErrorType};

use crate::grpc::Code;

/// Every error a client can receive from the gateway itself. The `code` strings are API:
/// clients match on them, so they never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayError {
    RouteNotFound,
    UpstreamUnavailable,
    UpstreamTimeout,
    BadRequest,
    HeadersTooLarge,
    BodyTooLarge,
    RequestTimeout,
    Internal,
}

impl GatewayError {
    pub fn status(self) -> u16 {
        match self {
            Self::RouteNotFound => 404,
            Self::UpstreamUnavailable => 502,
            Self::UpstreamTimeout => 504,
            Self::BadRequest => 400,
            Self::HeadersTooLarge => 431,
            Self::BodyTooLarge => 413,
            Self::RequestTimeout => 408,
            Self::Internal => 500,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::RouteNotFound => "ROUTE_NOT_FOUND",
            Self::UpstreamUnavailable => "UPSTREAM_UNAVAILABLE",
            Self::UpstreamTimeout => "UPSTREAM_TIMEOUT",
            Self::BadRequest => "BAD_REQUEST",
            Self::HeadersTooLarge => "REQUEST_HEADERS_TOO_LARGE",
            Self::BodyTooLarge => "REQUEST_BODY_TOO_LARGE",
            Self::RequestTimeout => "REQUEST_TIMEOUT",
            Self::Internal => "INTERNAL_ERROR",
        }
    }

    /// What a gRPC client gets instead (gRPC's own mapping of HTTP errors, with the
    /// deadline and size errors named for what they are).
    pub fn grpc_code(self) -> Code {
        match self {
            Self::RouteNotFound => Code::UNIMPLEMENTED,
            Self::UpstreamUnavailable => Code::UNAVAILABLE,
            Self::UpstreamTimeout | Self::RequestTimeout => Code::DEADLINE_EXCEEDED,
            Self::HeadersTooLarge | Self::BodyTooLarge => Code::RESOURCE_EXHAUSTED,
            Self::BadRequest | Self::Internal => Code::INTERNAL,
        }
    }

    fn message(self) -> &'static str {
        match self {
            Self::RouteNotFound => "no route matches this request",
            Self::UpstreamUnavailable => "the upstream could not be reached or failed",
            Self::UpstreamTimeout => "the upstream did not answer in time",
            Self::BadRequest => "the request could not be read",
            Self::HeadersTooLarge => "the request header is larger than this listener accepts",
            Self::BodyTooLarge => "the request body is larger than this route accepts",
            Self::RequestTimeout => "the request body did not arrive in time",
            Self::Internal => "the gateway failed to handle this request",
        }
    }

    /// What a Pingora error means for the client; None when the client is gone.
    pub fn from_proxy_error(e: &Error) -> Option<Self> {
        use ErrorType::*;
        match (e.esource(), e.etype()) {
            (_, HTTPStatus(400)) => Some(Self::BadRequest),
            (ErrorSource::Upstream, ConnectTimedout | ReadTimedout | WriteTimedout) => {
                Some(Self::UpstreamTimeout)
            }
            (ErrorSource::Upstream, _) => Some(Self::UpstreamUnavailable),
            (ErrorSource::Downstream, ReadError | WriteError | ConnectionClosed) => None,
            (ErrorSource::Downstream, _) => Some(Self::BadRequest),
            (ErrorSource::Internal | ErrorSource::Unset, _) => Some(Self::Internal),
        }
    }
}

/// Writes a complete JSON error response, or for a gRPC client its gRPC equivalent.
pub async fn write_error(
    session: &mut Session,
    error: GatewayError,
    request_id: &str,
) -> Result<()> {
    if super::grpc::is_grpc_request(session.req_header()) {
        let answer = super::grpc::Answer {
            code: error.grpc_code(),
            message: error.message(),
            pushback: None,
            headers: vec![(super::headers::REQUEST_ID, request_id.to_string())],
        };
        return super::grpc::write_trailers_only(session, answer).await;
    }
    let body = serde_json::json!({
        "code": error.code(),
        "message": error.message(),
        "request_id": request_id,
    });
    write_json(session, error.status(), &body, request_id).await
}

pub async fn write_json(
    session: &mut Session,
    status: u16,
    body: &serde_json::Value,
    request_id: &str,
) -> Result<()> {
    let body = Bytes::from(body.to_string());
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header("content-type", "application/json")?;
    header.insert_header("content-length", body.len().to_string())?;
    header.insert_header("cache-control", "no-store")?;
    header.insert_header(super::headers::REQUEST_ID, request_id)?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await
}
