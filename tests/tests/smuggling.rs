//! Request-smuggling differential suite: a raw-socket client sends framing variants to
//! the gateway in front of an origin that records the exact bytes it receives
//! (`recording.rs`). For each variant, either the gateway refuses it (4xx and the
//! connection closed), or the origin saw exactly the requests the gateway logged,
//! framed unambiguously, and the connection ended where RFC 9112 requires. A table of
//! every variant is printed; no variant may end as "upstream saw something else".
//!
//! Every request a variant means to send carries `x-request-id: sNN-a` (or `-b`); a
//! request hidden inside another's body carries `sNN-smuggled`, so the origin seeing
//! it as a request of its own shows up as an id the gateway never logged.

use std::collections::BTreeSet;
use std::time::Duration;

use gateway_tests::h2frame::{
    ACK, DATA, END_HEADERS, END_STREAM, GOAWAY, HEADERS, RST_STREAM, SETTINGS, frame, header_block,
    hello,
};
use gateway_tests::recording::{RecordingOrigin, Seen};
use gateway_tests::{Gateway, Options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Variant {
    name: &'static str,
    /// The bytes, with `{id}` standing for this variant's id prefix.
    wire: String,
    /// Requests the client means to send (responses to wait for before deciding
    /// whether the connection stays open).
    requests: usize,
    /// RFC 9112 requires the connection to end after the response.
    must_close: bool,
}

fn v(name: &'static str, wire: &str, requests: usize, must_close: bool) -> Variant {
    Variant {
        name,
        wire: wire.to_string(),
        requests,
        must_close,
    }
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nhost: a\r\nx-request-id: {id}-smuggled\r\n\r\n";

fn variants() -> Vec<Variant> {
    let get = "GET /a HTTP/1.1\r\nhost: a\r\nx-request-id: {id}-a\r\n";
    let post = "POST /a HTTP/1.1\r\nhost: a\r\nx-request-id: {id}-a\r\n";
    let inner = SMUGGLED;
    let inner_len = inner.len() - 4 + 3; // "{id}" becomes "sNN" (3 bytes)
    vec![
        v("plain GET", &format!("{get}\r\n"), 1, false),
        v(
            "POST with Content-Length",
            &format!("{post}content-length: 5\r\n\r\nhello"),
            1,
            false,
        ),
        v(
            "POST chunked",
            &format!("{post}transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            1,
            false,
        ),
        v(
            "pipelined pair",
            &format!("{get}\r\nGET /b HTTP/1.1\r\nhost: a\r\nx-request-id: {{id}}-b\r\n\r\n"),
            2,
            false,
        ),
        v(
            "CL.TE: Content-Length covers a smuggled request",
            &format!(
                "{post}content-length: {}\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{inner}",
                5 + inner_len
            ),
            1,
            true,
        ),
        v(
            "TE.CL: chunk holds a smuggled request",
            &format!(
                "{post}transfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n{:x}\r\n{inner}\r\n0\r\n\r\n",
                inner_len
            ),
            1,
            true,
        ),
        v(
            "duplicate Content-Length, different",
            &format!("{post}content-length: 5\r\ncontent-length: 6\r\n\r\nhello!"),
            1,
            true,
        ),
        v(
            "duplicate Content-Length, same",
            &format!("{post}content-length: 5\r\ncontent-length: 5\r\n\r\nhello"),
            1,
            false,
        ),
        v(
            "comma-joined Content-Length, same",
            &format!("{post}content-length: 5, 5\r\n\r\nhello"),
            1,
            false,
        ),
        v(
            "comma-joined Content-Length, different",
            &format!("{post}content-length: 5, 6\r\n\r\nhello!"),
            1,
            true,
        ),
        v(
            "Content-Length with +",
            &format!("{post}content-length: +5\r\n\r\nhello"),
            1,
            true,
        ),
        v(
            "Content-Length in hex",
            &format!("{post}content-length: 0x5\r\n\r\nhello"),
            1,
            true,
        ),
        v(
            "negative Content-Length",
            &format!("{post}content-length: -1\r\n\r\n{inner}"),
            1,
            true,
        ),
        v(
            "Content-Length overflowing u64",
            &format!("{post}content-length: 184467440737095516160\r\n\r\nhello"),
            1,
            true,
        ),
        v(
            "Content-Length shorter than the body",
            &format!("{post}content-length: 2\r\n\r\nhi{inner}"),
            2,
            false,
        ),
        v(
            "Transfer-Encoding: chunked, identity",
            &format!("{post}transfer-encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            1,
            true,
        ),
        v(
            "Transfer-Encoding: identity, chunked",
            &format!("{post}transfer-encoding: identity, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            1,
            false,
        ),
        v(
            "Transfer-Encoding on two lines",
            &format!(
                "{post}transfer-encoding: identity\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            ),
            1,
            false,
        ),
        v(
            "Transfer-Encoding: xchunked",
            &format!("{post}transfer-encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            1,
            true,
        ),
        v(
            "Transfer-Encoding: CHUNKED",
            &format!("{post}transfer-encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            1,
            false,
        ),
        v(
            "Transfer-Encoding with a tab",
            &format!("{post}transfer-encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            1,
            false,
        ),
        v(
            "Transfer-Encoding in HTTP/1.0",
            "POST /a HTTP/1.0\r\nx-request-id: {id}-a\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            1,
            true,
        ),
        v(
            "obs-fold in Transfer-Encoding",
            &format!("{post}transfer-encoding:\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            1,
            true,
        ),
        v(
            "obs-fold in another header",
            &format!("{get}x-a: 1\r\n 2\r\n\r\n"),
            1,
            true,
        ),
        v(
            "bare LF line ends",
            "GET /a HTTP/1.1\nhost: a\nx-request-id: {id}-a\n\n",
            1,
            false,
        ),
        v(
            "bare CR in a value",
            &format!("{get}x-a: 1\r2\r\n\r\n"),
            1,
            true,
        ),
        v(
            "space before colon: Transfer-Encoding",
            &format!("{post}transfer-encoding : chunked\r\ncontent-length: 5\r\n\r\nhello"),
            1,
            true,
        ),
        v(
            "space before colon: Content-Length",
            &format!("{post}content-length : 5\r\n\r\nhello"),
            1,
            true,
        ),
        v(
            "NUL in a value",
            &format!("{get}x-a: 1\x002\r\n\r\n"),
            1,
            true,
        ),
        v(
            "chunk extension",
            &format!("{post}transfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\n\r\n"),
            1,
            false,
        ),
        v(
            "chunk extension with a quoted CRLF",
            &format!("{post}transfer-encoding: chunked\r\n\r\n5;a=\"\r\n\"\r\nhello\r\n0\r\n\r\n"),
            1,
            true,
        ),
        v(
            "huge chunk size",
            &format!(
                "{post}transfer-encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n"
            ),
            1,
            true,
        ),
        v(
            "chunk size with leading zeros",
            &format!("{post}transfer-encoding: chunked\r\n\r\n0005\r\nhello\r\n0\r\n\r\n"),
            1,
            false,
        ),
        v(
            "chunk size 0x5",
            &format!("{post}transfer-encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"),
            1,
            true,
        ),
        v(
            "negative chunk size",
            &format!("{post}transfer-encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"),
            1,
            true,
        ),
        v(
            "chunk data longer than its size",
            &format!("{post}transfer-encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n"),
            1,
            true,
        ),
        v(
            "trailer after the last chunk",
            &format!(
                "{post}transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\n"
            ),
            1,
            false,
        ),
        v(
            "absolute-form, Host differs",
            "GET http://other.test/a HTTP/1.1\r\nhost: a\r\nx-request-id: {id}-a\r\n\r\n",
            1,
            true,
        ),
        v(
            "absolute-form, Host matches",
            "GET http://a/a HTTP/1.1\r\nhost: a\r\nx-request-id: {id}-a\r\n\r\n",
            1,
            false,
        ),
        v(
            "two Host fields",
            "GET /a HTTP/1.1\r\nhost: a\r\nhost: b\r\nx-request-id: {id}-a\r\n\r\n",
            1,
            true,
        ),
        v(
            "Host with a space",
            "GET /a HTTP/1.1\r\nhost: a b\r\nx-request-id: {id}-a\r\n\r\n",
            1,
            true,
        ),
        v(
            "HTTP/1.1 without Host",
            "GET /a HTTP/1.1\r\nx-request-id: {id}-a\r\n\r\n",
            1,
            true,
        ),
        v(
            "double space in the request line",
            "GET  /a HTTP/1.1\r\nhost: a\r\nx-request-id: {id}-a\r\n\r\n",
            1,
            true,
        ),
        v(
            "invalid header name",
            &format!("{get}x(a): 1\r\n\r\n"),
            1,
            true,
        ),
        v(
            "Connection nominates Content-Length",
            &format!("{post}connection: content-length\r\ncontent-length: 5\r\n\r\nhello"),
            1,
            false,
        ),
        v(
            "Connection nominates Transfer-Encoding",
            &format!(
                "{post}connection: transfer-encoding\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            ),
            1,
            false,
        ),
        v(
            "Expect: 100-continue",
            &format!("{post}expect: 100-continue\r\ncontent-length: 5\r\n\r\nhello"),
            1,
            false,
        ),
        v(
            "h2c upgrade with a body",
            &format!(
                "{post}connection: upgrade, http2-settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAAP__\r\ncontent-length: 5\r\n\r\nhello"
            ),
            1,
            false,
        ),
        v(
            "dot segments in the target",
            "GET /a/../a/./b HTTP/1.1\r\nhost: a\r\nx-request-id: {id}-a\r\n\r\n",
            1,
            false,
        ),
        v(
            "encoded slash in the target",
            "GET /a%2fb HTTP/1.1\r\nhost: a\r\nx-request-id: {id}-a\r\n\r\n",
            1,
            true,
        ),
    ]
}

/// One response's status and headers as the client read it.
struct ClientResponse {
    status: u16,
    connection_close: bool,
}

/// Parses the responses in `bytes` (content-length or chunked bodies).
fn responses(bytes: &[u8]) -> Vec<ClientResponse> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(head)) = response.parse(&bytes[at..]) else {
            break;
        };
        let find = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
        };
        let status = response.code.unwrap_or(0);
        let connection_close = find("connection").is_some_and(|v| v.contains("close"));
        let length: usize = find("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let chunked = find("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        at += head;
        if status != 100 {
            out.push(ClientResponse {
                status,
                connection_close,
            });
        }
        if chunked {
            // Skip to the end of the chunked body.
            match bytes[at..].windows(5).position(|w| w == b"0\r\n\r\n") {
                Some(end) => at += end + 5,
                None => break,
            }
        } else {
            at += length;
        }
    }
    out
}

/// What the client saw: responses, and whether the gateway closed the connection
/// itself (rather than after our half-close).
async fn send(gw: &Gateway, wire: &[u8], expected: usize) -> (Vec<ClientResponse>, bool) {
    let mut stream = TcpStream::connect(gw.listen).await.expect("connect");
    stream.write_all(wire).await.expect("send");
    let mut bytes = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut half_closed = false;
    loop {
        let got = responses(&bytes);
        let done = got.len() >= expected;
        if done && !half_closed && !got.iter().any(|r| r.connection_close) {
            // Everything asked for is answered and the gateway means to keep the
            // connection: end our side, then read to the end.
            let _ = stream.shutdown().await;
            half_closed = true;
        }
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => bytes.extend_from_slice(&chunk[..n]),
            Ok(_) => return (responses(&bytes), !half_closed),
            // Still open 5 s on: the gateway neither answered nor closed.
            Err(_) => return (responses(&bytes), false),
        }
    }
}

/// An HTTP/2 variant: the request's header fields (pseudo-headers first) and DATA frames.
struct H2Variant {
    name: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    data: Vec<&'static [u8]>,
}

fn h2(
    name: &'static str,
    extra: &[(&'static str, &'static str)],
    data: &[&'static [u8]],
) -> H2Variant {
    let method = if data.is_empty() { "GET" } else { "POST" };
    let mut headers = vec![
        (":method", method),
        (":scheme", "http"),
        (":authority", "a"),
        (":path", "/a"),
        ("x-request-id", "{id}-a"),
    ];
    for (name, value) in extra {
        match headers.iter_mut().find(|(n, _)| n == name) {
            Some(field) => field.1 = value,
            None => headers.push((name, value)),
        }
    }
    H2Variant {
        name,
        headers,
        data: data.to_vec(),
    }
}

fn h2_variants() -> Vec<H2Variant> {
    let smuggled: &'static [u8] = b"GET /smuggled HTTP/1.1\r\nhost: a\r\n\r\n";
    vec![
        h2("h2 GET", &[], &[]),
        h2(
            "h2 POST with a matching content-length",
            &[("content-length", "5")],
            &[b"hello"],
        ),
        h2(
            "h2 content-length above the DATA sent",
            &[("content-length", "10")],
            &[b"hello"],
        ),
        h2(
            "h2 content-length below the DATA sent",
            &[("content-length", "2")],
            &[b"hello"],
        ),
        h2("h2 DATA holding an HTTP/1 request", &[], &[smuggled]),
        h2(
            "h2 connection: keep-alive",
            &[("connection", "keep-alive")],
            &[],
        ),
        h2(
            "h2 transfer-encoding: chunked",
            &[("transfer-encoding", "chunked")],
            &[b"5\r\nhello\r\n0\r\n\r\n"],
        ),
        h2("h2 keep-alive header", &[("keep-alive", "timeout=5")], &[]),
        h2("h2 upgrade header", &[("upgrade", "h2c")], &[]),
        h2("h2 te: gzip", &[("te", "gzip")], &[]),
        h2("h2 te: trailers", &[("te", "trailers")], &[]),
        h2("h2 upper-case field name", &[("X-Upper", "1")], &[]),
        h2("h2 host differing from :authority", &[("host", "b")], &[]),
        h2("h2 :path with dot segments", &[(":path", "/a/../a")], &[]),
        h2(
            "h2 :path with an encoded slash",
            &[(":path", "/a%2fb")],
            &[],
        ),
        h2("h2 :authority with a quote", &[(":authority", "a\"b")], &[]),
    ]
}

/// How the gateway ended an HTTP/2 stream.
#[derive(Debug)]
enum H2End {
    /// A response; its status when HPACK gave it from the static table.
    Response(Option<u16>),
    Reset,
    GoAway,
    Closed,
}

async fn send_h2(addr: std::net::SocketAddr, variant: &H2Variant, id: &str) -> H2End {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let fields: Vec<(String, String)> = variant
        .headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.replace("{id}", id)))
        .collect();
    let mut wire = hello();
    let end_stream = if variant.data.is_empty() {
        END_STREAM
    } else {
        0
    };
    wire.extend(frame(
        HEADERS,
        END_HEADERS | end_stream,
        1,
        &header_block(&fields),
    ));
    for (i, data) in variant.data.iter().enumerate() {
        let last = if i + 1 == variant.data.len() {
            END_STREAM
        } else {
            0
        };
        wire.extend(frame(DATA, last, 1, data));
    }
    stream.write_all(&wire).await.expect("send");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut buffer = Vec::new();
    let mut status = None;
    loop {
        while buffer.len() >= 9 {
            let length =
                usize::from(buffer[0]) << 16 | usize::from(buffer[1]) << 8 | usize::from(buffer[2]);
            if buffer.len() < 9 + length {
                break;
            }
            let (kind, flags) = (buffer[3], buffer[4]);
            let stream_id =
                u32::from_be_bytes([buffer[5], buffer[6], buffer[7], buffer[8]]) & 0x7fff_ffff;
            let payload: Vec<u8> = buffer[9..9 + length].to_vec();
            buffer.drain(..9 + length);
            match (kind, stream_id) {
                (SETTINGS, 0) if flags & ACK == 0 => {
                    let _ = stream.write_all(&frame(SETTINGS, ACK, 0, &[])).await;
                }
                (HEADERS, 1) => {
                    // :status from the static table (indexes 8 to 14), when it is there.
                    status = payload.first().and_then(|b| match b {
                        0x88 => Some(200),
                        0x89 => Some(204),
                        0x8a => Some(206),
                        0x8b => Some(304),
                        0x8c => Some(400),
                        0x8d => Some(404),
                        0x8e => Some(500),
                        _ => None,
                    });
                    if flags & END_STREAM != 0 {
                        return H2End::Response(status);
                    }
                }
                (DATA, 1) if flags & END_STREAM != 0 => return H2End::Response(status),
                (RST_STREAM, 1) => return H2End::Reset,
                (GOAWAY, _) => return H2End::GoAway,
                _ => {}
            }
        }
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buffer.extend_from_slice(&chunk[..n]),
            _ => return H2End::Closed,
        }
    }
}

/// The access-log events of one variant: (request id, path, upstream, how it failed:
/// what the gateway answered instead, or the error; empty when it did not fail).
fn access_events(logs: &str, id: &str) -> Vec<(String, String, String, String)> {
    logs.lines()
        .filter(|l| l.contains("\"gateway::access\""))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|event| {
            let field = |name: &str| {
                event
                    .get(name)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let request_id = field("request_id");
            request_id.starts_with(&format!("{id}-")).then(|| {
                (
                    request_id,
                    field("path"),
                    field("upstream"),
                    field("answered_by_gateway") + &field("error"),
                )
            })
        })
        .collect()
}

/// The request id in the head of what the origin recorded (read leniently: a record
/// the origin could not parse may still name its request).
fn record_id(record: &Seen) -> Option<String> {
    if let Ok(request) = &record.request {
        return request.header("x-request-id").map(str::to_string);
    }
    let text = String::from_utf8_lossy(&record.raw).to_ascii_lowercase();
    let at = text.find("x-request-id:")? + "x-request-id:".len();
    let rest = text[at..].trim_start();
    Some(rest.split(|c: char| c.is_whitespace()).next()?.to_string())
}

/// What the origin's records say once compared with what the gateway logged.
#[derive(Debug, PartialEq)]
enum Comparison {
    /// Every request the origin read is one the gateway logged, and the other way round.
    Same,
    /// As `Same`, except that the gateway gave up on a request mid-body (a malformed
    /// chunk): the origin got the start of that same request, then the connection ended.
    AbortedMidBody,
}

/// Compares what the origin saw with what the gateway logged; Err says how they differ.
fn compare(
    seen: &[&Seen],
    logged: &[(String, String, String, String)],
) -> Result<Comparison, String> {
    let logged_ids: BTreeSet<&str> = logged.iter().map(|(id, ..)| id.as_str()).collect();
    let mut origin_ids = BTreeSet::new();
    let mut comparison = Comparison::Same;
    for record in seen {
        let id = record_id(record).unwrap_or_else(|| "(none)".into());
        let request = match &record.request {
            Ok(request) => request,
            // The gateway refused the body after forwarding the head: the upstream's
            // copy of that same request ends unfinished.
            Err(why)
                if why.starts_with("incomplete")
                    && logged
                        .iter()
                        .any(|(l, _, _, failed)| *l == id && !failed.is_empty()) =>
            {
                comparison = Comparison::AbortedMidBody;
                origin_ids.insert(id);
                continue;
            }
            Err(why) => {
                return Err(format!(
                    "origin could not read `{}`: {why}",
                    record.raw.escape_ascii()
                ));
            }
        };
        if !logged_ids.contains(id.as_str()) {
            return Err(format!(
                "origin saw {} {} (id {id}) that the gateway never logged",
                request.method, request.target
            ));
        }
        let path = request.target.split('?').next().unwrap_or_default();
        if let Some((_, logged_path, ..)) = logged.iter().find(|(l, ..)| *l == id)
            && logged_path != path
        {
            return Err(format!("gateway logged {logged_path}, origin saw {path}"));
        }
        if !origin_ids.insert(id.clone()) {
            return Err(format!("origin saw {id} twice"));
        }
    }
    for (id, path, upstream, answered) in logged {
        if !upstream.is_empty() && answered.is_empty() && !origin_ids.contains(id) {
            return Err(format!(
                "gateway logged {id} {path} as forwarded; origin never saw it"
            ));
        }
    }
    Ok(comparison)
}

#[tokio::test]
async fn no_framing_variant_reaches_the_upstream_as_something_else() {
    let origin = RecordingOrigin::start().await.expect("origin");
    let body = format!(
        "upstreams:\n  api: {{ endpoints: [\"{}\"] }}\nroutes:\n  - {{ upstream: api }}\n",
        origin.addr()
    );
    let json_logs = Options {
        args: &["--log-format", "json"],
        ..Options::default()
    };
    let gw = Gateway::start_with(&body, json_logs).await;
    let gw_h2 = Gateway::start_with(
        &body,
        Options {
            listener_keys: Some("    http2: true\n"),
            ..json_logs
        },
    )
    .await;

    // First every variant, as the client sees it.
    let variants = variants();
    assert!(
        variants.len() >= 40,
        "the issue asks for at least 40 variants"
    );
    let mut client = Vec::new();
    for (i, variant) in variants.iter().enumerate() {
        let wire = variant.wire.replace("{id}", &format!("s{i:02}"));
        client.push(send(&gw, wire.as_bytes(), variant.requests).await);
    }
    let h2_variants = h2_variants();
    let mut h2_client = Vec::new();
    for (i, variant) in h2_variants.iter().enumerate() {
        h2_client.push(send_h2(gw_h2.listen, variant, &format!("h{i:02}")).await);
    }
    // Then what the gateways logged, and (once they are gone and their upstream
    // connections closed) everything the origin read.
    let logs = gw.logs() + &gw_h2.logs();
    drop(gw);
    drop(gw_h2);
    assert!(
        origin.drained(Duration::from_secs(10)).await,
        "the origin still holds unread connections"
    );
    let records = origin.seen();
    let unattributed: Vec<String> = records
        .iter()
        .filter(|r| record_id(r).is_none_or(|id| !id.starts_with(['s', 'h'])))
        .map(|r| r.raw.escape_ascii().to_string())
        .collect();
    assert!(
        unattributed.is_empty(),
        "the origin saw requests no variant sent: {unattributed:?}"
    );

    let mut table = vec![format!(
        "{:<3} {:<48} {:<11} {:<7} {:<7} verdict",
        "#", "variant", "client got", "closed", "origin"
    )];
    let mut failures = Vec::new();
    let mut forwarded = 0;
    let mut refused = 0;
    for (i, (variant, (got, closed))) in variants.iter().zip(&client).enumerate() {
        let id = format!("s{i:02}");
        let seen: Vec<&Seen> = records
            .iter()
            .filter(|r| record_id(r).is_some_and(|r| r.starts_with(&format!("{id}-"))))
            .collect();
        let logged = access_events(&logs, &id);
        let closed = *closed;
        let statuses: Vec<String> = got.iter().map(|r| r.status.to_string()).collect();
        let all_4xx = !got.is_empty() && got.iter().all(|r| (400..500).contains(&r.status));
        let verdict = match compare(&seen, &logged) {
            Err(why) => Err(format!("UPSTREAM SAW SOMETHING ELSE: {why}")),
            Ok(Comparison::AbortedMidBody) if all_4xx && closed => {
                refused += 1;
                Ok("refused mid-body; the upstream's copy aborted")
            }
            Ok(Comparison::AbortedMidBody) => Err(format!(
                "aborted mid-body, but the client got {statuses:?}, closed: {closed}"
            )),
            Ok(_) if seen.is_empty() && (all_4xx || got.is_empty()) => {
                if closed {
                    refused += 1;
                    Ok("refused")
                } else {
                    Err("refused, but the connection stayed open".to_string())
                }
            }
            Ok(_) if seen.is_empty() => Err(format!("answered {statuses:?} without the upstream")),
            Ok(_) if variant.must_close && !closed => {
                Err("forwarded, but the connection stayed open (RFC 9112 requires a close)".into())
            }
            Ok(_) => {
                forwarded += 1;
                Ok("forwarded, same requests")
            }
        };
        let shown = match &verdict {
            Ok(text) => text.to_string(),
            Err(text) => format!("FAIL: {text}"),
        };
        table.push(format!(
            "{:<3} {:<48} {:<11} {:<7} {:<7} {shown}",
            i,
            variant.name,
            if statuses.is_empty() {
                "nothing".into()
            } else {
                statuses.join(",")
            },
            closed,
            seen.len(),
        ));
        if verdict.is_err() {
            failures.push(variant.name);
        }
    }
    for (i, (variant, end)) in h2_variants.iter().zip(&h2_client).enumerate() {
        let id = format!("h{i:02}");
        let seen: Vec<&Seen> = records
            .iter()
            .filter(|r| record_id(r).is_some_and(|r| r.starts_with(&format!("{id}-"))))
            .collect();
        let logged = access_events(&logs, &id);
        let refusal = match end {
            H2End::Reset | H2End::GoAway => true,
            H2End::Response(Some(status)) => (400..500).contains(status),
            H2End::Response(None) | H2End::Closed => false,
        };
        let verdict = match compare(&seen, &logged) {
            Err(why) => Err(format!("UPSTREAM SAW SOMETHING ELSE: {why}")),
            Ok(Comparison::AbortedMidBody) if refusal => {
                refused += 1;
                Ok("refused mid-body; the upstream's copy aborted")
            }
            Ok(_) if seen.is_empty() && refusal => {
                refused += 1;
                Ok("refused")
            }
            Ok(Comparison::Same) if !seen.is_empty() && matches!(end, H2End::Response(_)) => {
                forwarded += 1;
                Ok("forwarded, same requests")
            }
            Ok(other) => Err(format!("{other:?} with {end:?}")),
        };
        let shown = match &verdict {
            Ok(text) => text.to_string(),
            Err(text) => format!("FAIL: {text}"),
        };
        let end = match end {
            H2End::Response(Some(status)) => status.to_string(),
            H2End::Response(None) => "response".into(),
            other => format!("{other:?}"),
        };
        table.push(format!(
            "{:<3} {:<48} {:<11} {:<7} {:<7} {shown}",
            i,
            variant.name,
            end,
            "-",
            seen.len(),
        ));
        if verdict.is_err() {
            failures.push(variant.name);
        }
    }
    println!("{}", table.join("\n"));
    assert!(
        failures.is_empty(),
        "variants that failed: {failures:?}\n{}",
        table.join("\n")
    );
    assert!(
        forwarded >= 10 && refused >= 10,
        "{forwarded} forwarded, {refused} refused"
    );
}
