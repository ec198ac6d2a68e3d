//! What a plugin instance may touch: a WASI context that grants nothing (no files,
//! no environment, no sockets, no outgoing HTTP; stdout and stderr go to the log), the `host` interface
//! (logging, and the request and headers of the exchange the current call is about,
//! lent for the length of the call), and a memory limiter that remembers when it said no.
//! Every line a plugin writes, through `host.log` or stdout/stderr, goes through its
//! `PluginLog` (`log.rs`): escaped, cut, within its budget.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use pingora::http::RequestHeader;
use scoped_tls::ScopedKey;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::WasiHttpCtxView;

use super::bindings::host::{self, LogLevel, Message, RequestField};
use super::bindings::types;
use super::log::{MAX_LOG_LINE, PluginLog};
use super::wasi_http::HttpState;

/// Resources (WASI streams, `wasi:http` requests, header sets, bodies) one instance
/// may hold at once: a plugin that creates them in a loop and never drops them gets an
/// error (a trap in most bindings) instead of growing host memory; the instance is then
/// dropped like any that failed.
pub const MAX_RESOURCES: usize = 1024;

/// The data of one plugin instance's store.
pub struct HostState {
    log: Arc<PluginLog>,
    wasi: WasiCtx,
    http: HttpState,
    table: ResourceTable,
    pub limiter: MemoryLimiter,
}

/// The exchange a call is about, as the proxy holds it: lent to the call, not copied,
/// and not lowered into it, so a plugin pays only for what it reads (`host.request`,
/// `host.header`).
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    /// The client's request, before any rewriting for the upstream.
    pub request: &'a RequestHeader,
    // `String`, not `str`: a lent value must be sized.
    pub route: &'a String,
    pub upstream: &'a String,
    /// The response head's headers; none before there is a response (a fallback's
    /// call, a transport error).
    pub response: Option<&'a http::HeaderMap>,
    /// The response's trailers, when they arrived (a gRPC call's status).
    pub trailers: Option<&'a http::HeaderMap>,
}

// Where the host functions find the lent exchange: calls run to the end on the
// thread that lends it (`instance.rs`), so thread-locals scoped to the call are enough.
scoped_tls::scoped_thread_local!(static REQUEST: RequestHeader);
scoped_tls::scoped_thread_local!(static ROUTE: String);
scoped_tls::scoped_thread_local!(static UPSTREAM: String);
scoped_tls::scoped_thread_local!(static RESPONSE_HEADERS: http::HeaderMap);
scoped_tls::scoped_thread_local!(static TRAILERS: http::HeaderMap);

impl Exchange<'_> {
    /// Runs `call` with this exchange readable by the `host` functions.
    pub fn lend<R>(self, call: impl FnOnce() -> R) -> R {
        REQUEST.set(self.request, || {
            ROUTE.set(self.route, || {
                UPSTREAM.set(self.upstream, || {
                    let call = || match self.trailers {
                        Some(trailers) => TRAILERS.set(trailers, call),
                        None => call(),
                    };
                    match self.response {
                        Some(response) => RESPONSE_HEADERS.set(response, call),
                        None => call(),
                    }
                })
            })
        })
    }
}

/// What `read` makes of the value lent through `key`; `None` outside a call.
fn lent<T, R>(key: &'static ScopedKey<T>, read: impl FnOnce(&T) -> R) -> Option<R> {
    key.is_set().then(|| key.with(read))
}

/// What `read` makes of the lent headers of `message`; `None` when none are lent.
fn lent_headers<R>(message: Message, read: impl FnOnce(&http::HeaderMap) -> R) -> Option<R> {
    match message {
        Message::Request => lent(&REQUEST, |request| read(&request.headers)),
        Message::Response => lent(&RESPONSE_HEADERS, read),
        Message::Trailers => lent(&TRAILERS, read),
    }
}

fn path_and_query(request: &RequestHeader) -> String {
    request
        .uri
        .path_and_query()
        .map_or_else(|| request.uri.path(), |pq| pq.as_str())
        .to_owned()
}

/// The Host header, else the URI's authority (an absolute-form request line).
fn authority(request: &RequestHeader) -> String {
    request
        .headers
        .get(http::header::HOST)
        .map(lossy)
        .or_else(|| request.uri.authority().map(ToString::to_string))
        .unwrap_or_default()
}

fn lossy(value: &http::HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

impl HostState {
    pub fn new(log: Arc<PluginLog>, memory: u64) -> Self {
        let wasi = WasiCtxBuilder::new()
            .stdout(PluginOutput {
                log: Arc::clone(&log),
                stream: "stdout",
            })
            .stderr(PluginOutput {
                log: Arc::clone(&log),
                stream: "stderr",
            })
            // wasmtime-wasi's defaults, stated because `wasi.rs` relies on them: with no
            // socket, no socket operation that could wait can be reached.
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        Self {
            log,
            wasi,
            http: HttpState::default(),
            table: {
                let mut table = ResourceTable::new();
                table.set_max_capacity(MAX_RESOURCES);
                table
            },
            limiter: MemoryLimiter {
                memory: usize::try_from(memory).unwrap_or(usize::MAX),
                exceeded: false,
            },
        }
    }
}

impl HostState {
    /// What `wasi:http/types` works on (`wasi_http.rs`).
    pub fn http(&mut self) -> WasiHttpCtxView<'_> {
        self.http.view(&mut self.table)
    }

    /// The table every resource handed to the plugin lives in, WASI's and `wasi:http`'s.
    pub fn resource_table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl host::Host for HostState {
    fn log(&mut self, level: LogLevel, message: String) {
        self.log.emit(level, "log", message.as_bytes(), 0);
    }

    fn request(&mut self, field: RequestField) -> String {
        let value = match field {
            RequestField::Method => lent(&REQUEST, |request| request.method.as_str().to_owned()),
            RequestField::Path => lent(&REQUEST, path_and_query),
            RequestField::Authority => lent(&REQUEST, authority),
            RequestField::Route => lent(&ROUTE, String::clone),
            RequestField::Upstream => lent(&UPSTREAM, String::clone),
        };
        value.unwrap_or_default()
    }

    fn header(&mut self, message: Message, name: String) -> Vec<String> {
        // An invalid name finds nothing: `get_all` parses it and matches no entry.
        lent_headers(message, |headers| {
            headers.get_all(name.as_str()).iter().map(lossy).collect()
        })
        .unwrap_or_default()
    }

    fn all_headers(&mut self, message: Message) -> types::Headers {
        lent_headers(message, |headers| {
            headers
                .iter()
                .map(|(name, value)| (name.as_str().to_owned(), lossy(value)))
                .collect()
        })
        .unwrap_or_default()
    }
}

/// Caps linear memory per instance; `exceeded` tells a trap caused by running out of
/// memory apart from any other.
pub struct MemoryLimiter {
    memory: usize,
    pub exceeded: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.memory;
        self.exceeded |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// A plugin's stdout or stderr: whole lines to the log, at info (stdout) or warn (stderr).
#[derive(Clone)]
struct PluginOutput {
    log: Arc<PluginLog>,
    stream: &'static str,
}

impl IsTerminal for PluginOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for PluginOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineLogger::new(self))
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineLogger::new(self))
    }
}

struct LineLogger {
    log: Arc<PluginLog>,
    stream: &'static str,
    line: Vec<u8>,
    /// Bytes of the current line beyond what is kept.
    cut: usize,
}

impl LineLogger {
    fn new(output: &PluginOutput) -> Self {
        Self {
            log: Arc::clone(&output.log),
            stream: output.stream,
            line: Vec::new(),
            cut: 0,
        }
    }

    fn push(&mut self, mut bytes: &[u8]) {
        let level = if self.stream == "stderr" {
            LogLevel::Warn
        } else {
            LogLevel::Info
        };
        while let Some(end) = bytes.iter().position(|b| *b == b'\n') {
            self.keep(&bytes[..end]);
            self.log.emit(level, self.stream, &self.line, self.cut);
            self.line.clear();
            self.cut = 0;
            bytes = &bytes[end + 1..];
        }
        self.keep(bytes);
    }

    /// Keeps at most one line's worth; a plugin printing without newlines cannot grow it.
    fn keep(&mut self, bytes: &[u8]) {
        let room = MAX_LOG_LINE.saturating_sub(self.line.len());
        let kept = bytes.len().min(room);
        self.line.extend_from_slice(&bytes[..kept]);
        self.cut = self.cut.saturating_add(bytes.len() - kept);
    }
}

#[async_trait::async_trait]
impl OutputStream for LineLogger {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for LineLogger {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LineLogger {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use host::Host;

    fn test_log() -> Arc<PluginLog> {
        let dropped = prometheus::IntCounter::new("dropped", "test").expect("counter");
        Arc::new(PluginLog::new("test".into(), 100, 64 << 10, dropped))
    }

    #[test]
    fn an_instance_holds_a_bounded_number_of_resources() {
        let mut state = HostState::new(test_log(), 1 << 20);
        let table = state.resource_table();
        for i in 0..MAX_RESOURCES {
            table.push(i).expect("within the bound");
        }
        assert!(table.push(0usize).is_err(), "one more is refused");
    }

    fn request(path: &[u8], headers: &[(&'static str, &'static [u8])]) -> RequestHeader {
        let mut request = RequestHeader::build("POST", path, None).expect("a valid request line");
        for (name, value) in headers {
            request
                .append_header(*name, *value)
                .expect("a valid header");
        }
        request
    }

    /// Runs `read` on a fresh state with an exchange lent.
    fn with_exchange<R>(read: impl FnOnce(&mut HostState) -> R) -> R {
        let request = request(
            b"/api/v1/orders?limit=5",
            &[
                ("host", b"shop.test:8080"),
                ("x-tenant", b"acme"),
                ("accept", b"text/html"),
                ("accept", b"application/json"),
            ],
        );
        let mut response = http::HeaderMap::new();
        let not_utf8 = http::HeaderValue::from_bytes(b"caf\xe9").expect("opaque bytes are valid");
        response.append("x-degraded", not_utf8);
        let mut state = HostState::new(test_log(), 1 << 20);
        let exchange = Exchange {
            request: &request,
            route: &"orders".to_string(),
            upstream: &"orders-v2".to_string(),
            response: Some(&response),
            trailers: None,
        };
        exchange.lend(|| read(&mut state))
    }

    #[test]
    fn the_request_is_read_field_by_field() {
        with_exchange(|state| {
            assert_eq!(state.request(RequestField::Method), "POST");
            assert_eq!(state.request(RequestField::Path), "/api/v1/orders?limit=5");
            assert_eq!(state.request(RequestField::Authority), "shop.test:8080");
            assert_eq!(state.request(RequestField::Route), "orders");
            assert_eq!(state.request(RequestField::Upstream), "orders-v2");
        });
        // No Host header: the authority of an absolute-form request line, else nothing.
        let mut absolute = request(b"/x", &[]);
        absolute.set_uri(http::Uri::from_static("http://origin.test/x"));
        let bare = request(b"/x", &[]);
        for (request, authority) in [(&absolute, "origin.test"), (&bare, "")] {
            let exchange = Exchange {
                request,
                route: &String::new(),
                upstream: &String::new(),
                response: None,
                trailers: None,
            };
            let mut state = HostState::new(test_log(), 1 << 20);
            exchange.lend(|| assert_eq!(state.request(RequestField::Authority), authority));
        }
    }

    #[test]
    fn a_header_is_found_in_any_case_with_every_value_in_order() {
        with_exchange(|state| {
            assert_eq!(
                state.header(Message::Request, "Accept".into()),
                ["text/html", "application/json"]
            );
            assert_eq!(state.header(Message::Request, "x-tenant".into()), ["acme"]);
            // Asked of the other message, or absent, or not a header name at all: nothing.
            assert!(
                state
                    .header(Message::Response, "x-tenant".into())
                    .is_empty()
            );
            assert!(
                state
                    .header(Message::Request, "x-missing".into())
                    .is_empty()
            );
            assert!(
                state
                    .header(Message::Request, "bad name\n".into())
                    .is_empty()
            );
            assert_eq!(
                state.header(Message::Response, "x-degraded".into()),
                ["caf\u{fffd}"]
            );
        });
    }

    #[test]
    fn all_headers_are_listed_grouped_by_name() {
        with_exchange(|state| {
            assert_eq!(
                state.all_headers(Message::Request),
                [
                    ("host".to_string(), "shop.test:8080".to_string()),
                    ("x-tenant".to_string(), "acme".to_string()),
                    ("accept".to_string(), "text/html".to_string()),
                    ("accept".to_string(), "application/json".to_string()),
                ]
            );
        });
    }

    #[test]
    fn nothing_is_readable_outside_a_call_or_without_a_response() {
        // Outside a call (a plugin's `init`): nothing.
        let mut idle = HostState::new(test_log(), 1 << 20);
        assert!(idle.all_headers(Message::Request).is_empty());
        assert!(idle.header(Message::Request, "host".into()).is_empty());
        assert!(idle.request(RequestField::Method).is_empty());
        assert!(idle.request(RequestField::Route).is_empty());
        // A fallback's call lends no response.
        let request = request(b"/", &[("host", b"api.test")]);
        let lent = Exchange {
            request: &request,
            route: &"api".to_string(),
            upstream: &"api".to_string(),
            response: None,
            trailers: None,
        };
        lent.lend(|| {
            assert_eq!(idle.header(Message::Request, "host".into()), ["api.test"]);
            assert!(idle.all_headers(Message::Response).is_empty());
        });
        // And nothing once the call is over.
        assert!(idle.header(Message::Request, "host".into()).is_empty());
        assert!(idle.request(RequestField::Path).is_empty());
    }
}
