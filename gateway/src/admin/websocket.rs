//! `GET /api/v1/events/ws`: the event stream over WebSocket (RFC 6455), for clients of
//! breaker services that speak it rather than Server-Sent Events. The same events, the
//! same admission (Host, token), plus an `Origin` check: a browser lets any page open a
//! WebSocket to any address, so a foreign origin is refused as for a state change.
//!
//! The gateway only sends (text frames, one event each); from the client it reads
//! control frames: ping (answered with pong) and close. Anything else, or a frame
//! larger than a control frame may be, closes the connection.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use sha1::{Digest, Sha1};
use tokio::sync::broadcast::error::RecvError;

use super::stream::{Subscription, WRITE_LIMIT};
use crate::events::EventHub;

/// RFC 6455 section 1.3.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Control frames carry at most 125 bytes; with the header and mask, this is the most
/// one frame from the client can be.
const MAX_CLIENT_FRAME: usize = 2 + 4 + 125;

const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// The `Sec-WebSocket-Accept` value for a valid opening handshake, or why it is not one.
pub fn accept(request: &RequestHeader) -> Result<String, &'static str> {
    let has = |name: &str, token: &str| {
        request.headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has("upgrade", "websocket") || !has("connection", "upgrade") {
        return Err("a WebSocket handshake needs `Upgrade: websocket` and `Connection: upgrade`");
    }
    if !has("sec-websocket-version", "13") {
        return Err("only WebSocket version 13 is spoken");
    }
    let key = request
        .headers
        .get("sec-websocket-key")
        .and_then(|k| k.to_str().ok())
        .map(str::trim)
        .filter(|k| k.len() == 24 && k.ends_with("=="))
        .ok_or("`Sec-WebSocket-Key` must be 16 bytes in base64")?;
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    Ok(base64(&sha.finalize()))
}

/// Standard base64 with padding (the 20 bytes of a SHA-1 digest here).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One unmasked frame from the server.
fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => out.push(n as u8),
        n @ 126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// A close frame with a status code and reason.
fn close(code: u16, reason: &str) -> Bytes {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..reason.len().min(123)]);
    frame(CLOSE, &payload)
}

/// What the client sent, as far as the gateway cares.
enum FromClient {
    Ping(Vec<u8>),
    /// An unsolicited pong is allowed and means nothing.
    Pong,
    Close,
    /// A data frame, an unmasked frame, a fragment, an oversized frame: not spoken here.
    Refused,
}

/// The first complete frame in `buffer` (removed from it), or None when it needs more.
fn next_frame(buffer: &mut BytesMut) -> Option<FromClient> {
    if buffer.len() < 2 {
        return None;
    }
    let (first, second) = (buffer[0], buffer[1]);
    let (fin, opcode, masked, len) = (
        first & 0x80 != 0,
        first & 0x0F,
        second & 0x80 != 0,
        usize::from(second & 0x7F),
    );
    if !fin || !masked || len > 125 || !matches!(opcode, CLOSE | PING | PONG) {
        return Some(FromClient::Refused);
    }
    let total = 2 + 4 + len;
    if buffer.len() < total {
        return None;
    }
    let frame = buffer.split_to(total);
    let mask = [frame[2], frame[3], frame[4], frame[5]];
    let payload: Vec<u8> = frame[6..]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    Some(match opcode {
        CLOSE => FromClient::Close,
        PING => FromClient::Ping(payload),
        _ => FromClient::Pong,
    })
}

/// Completes the handshake and streams events until the client leaves, falls behind
/// (closed with 1008 and counted), or the gateway shuts down (1001).
pub async fn serve(
    session: &mut ServerSession,
    accept: String,
    events: &EventHub,
    subscription: Subscription,
    shutdown: &ShutdownWatch,
) {
    let mut feed = events.subscribe();
    let Ok(mut header) = ResponseHeader::build(101, Some(3)) else {
        return;
    };
    let headers = [
        ("upgrade", "websocket".to_string()),
        ("connection", "upgrade".to_string()),
        ("sec-websocket-accept", accept),
    ];
    if headers
        .into_iter()
        .any(|(n, v)| header.insert_header(n, v).is_err())
    {
        return;
    }
    if session
        .write_response_header(Box::new(header))
        .await
        .is_err()
    {
        return;
    }
    let mut shutdown = shutdown.clone();
    let mut buffer = BytesMut::new();
    loop {
        let out = tokio::select! {
            event = feed.recv() => match event {
                Ok(event) => frame(TEXT, event.to_string().as_bytes()),
                Err(RecvError::Lagged(missed)) => {
                    subscription.dropped_slow(missed);
                    let _ = session.write_response_body(close(1008, "too slow: events were missed"), false).await;
                    return;
                }
                Err(RecvError::Closed) => return,
            },
            read = session.read_request_body() => match read {
                Ok(Some(bytes)) => {
                    buffer.extend_from_slice(&bytes);
                    if buffer.len() > 4 * MAX_CLIENT_FRAME {
                        let _ = session.write_response_body(close(1009, "frames too large"), false).await;
                        return;
                    }
                    match next_frame(&mut buffer) {
                        None | Some(FromClient::Pong) => continue,
                        Some(FromClient::Ping(payload)) => frame(PONG, &payload),
                        Some(FromClient::Close) => {
                            let _ = session.write_response_body(close(1000, ""), false).await;
                            return;
                        }
                        Some(FromClient::Refused) => {
                            let _ = session.write_response_body(close(1003, "this stream only sends"), false).await;
                            return;
                        }
                    }
                }
                _ => return,
            },
            _ = tokio::time::sleep(HEARTBEAT) => frame(PING, b""),
            _ = shutdown.changed() => {
                let _ = session.write_response_body(close(1001, "the gateway is shutting down"), false).await;
                return;
            }
        };
        match tokio::time::timeout(WRITE_LIMIT, session.write_response_body(out, false)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                subscription.dropped_slow(0);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_example_handshake() {
        // RFC 6455 section 1.3.
        let mut request = RequestHeader::build("GET", b"/api/v1/events/ws", None).expect("request");
        for (n, v) in [
            ("upgrade", "websocket"),
            ("connection", "keep-alive, Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ] {
            request.insert_header(n, v).expect("header");
        }
        assert_eq!(
            accept(&request).as_deref(),
            Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        request.remove_header("sec-websocket-version");
        assert!(accept(&request).is_err());
    }

    #[test]
    fn client_frames_are_read_only_as_control_frames() {
        let masked = |opcode: u8, payload: &[u8]| {
            let mask = [1u8, 2, 3, 4];
            let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
            BytesMut::from(&out[..])
        };
        let mut ping = masked(PING, b"hi");
        assert!(matches!(next_frame(&mut ping), Some(FromClient::Ping(p)) if p == b"hi"));
        assert!(ping.is_empty());
        let mut half = masked(PING, b"hi");
        half.truncate(4);
        assert!(next_frame(&mut half).is_none(), "waits for the rest");
        assert!(matches!(
            next_frame(&mut masked(CLOSE, b"")),
            Some(FromClient::Close)
        ));
        assert!(matches!(
            next_frame(&mut masked(TEXT, b"x")),
            Some(FromClient::Refused)
        ));
        let mut unmasked = BytesMut::from(&[0x80 | PING, 0][..]);
        assert!(matches!(
            next_frame(&mut unmasked),
            Some(FromClient::Refused)
        ));
        assert_eq!(frame(TEXT, &[0; 200])[1], 126);
        assert_eq!(base64(b"foob"), "Zm9vYg==");
    }
}
