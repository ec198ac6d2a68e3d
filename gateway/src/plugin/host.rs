//! What a plugin instance may touch: a WASI context that grants nothing (no files,
//! no environment, no sockets; stdout and stderr go to the log), the `host` interface
//! (logging, and the headers of the exchange the current call is about, lent for the
//! length of the call), and a memory limiter that remembers when it said no.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::host::{self, LogLevel, Message};
use super::bindings::types;

/// Longest log line kept from a plugin; the rest is cut.
const MAX_LOG_LINE: usize = 4096;

/// The data of one plugin instance's store.
pub struct HostState {
    plugin: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: MemoryLimiter,
}

/// The headers a plugin may read during one call: the proxy's own maps, lent, not
/// copied, and not lowered into the call; the plugin pays only for the headers it
/// asks for.
#[derive(Debug, Clone, Copy)]
pub struct ExchangeHeaders<'a> {
    pub request: &'a http::HeaderMap,
    /// None before there is a response (a fallback's call, a transport error).
    pub response: Option<&'a http::HeaderMap>,
}

// Where the host functions find the lent maps: calls run to the end on the thread
// that lends them (`instance.rs`), so a thread-local scoped to the call is enough.
scoped_tls::scoped_thread_local!(static REQUEST_HEADERS: http::HeaderMap);
scoped_tls::scoped_thread_local!(static RESPONSE_HEADERS: http::HeaderMap);

impl ExchangeHeaders<'_> {
    /// Runs `call` with these headers readable by `host.header` and `host.all-headers`.
    pub fn lend<R>(self, call: impl FnOnce() -> R) -> R {
        REQUEST_HEADERS.set(self.request, || match self.response {
            Some(response) => RESPONSE_HEADERS.set(response, call),
            None => call(),
        })
    }
}

/// What `read` makes of the lent headers of `message`; `None` when none are lent.
fn lent<R>(message: Message, read: impl FnOnce(&http::HeaderMap) -> R) -> Option<R> {
    let key = match message {
        Message::Request => &REQUEST_HEADERS,
        Message::Response => &RESPONSE_HEADERS,
    };
    key.is_set().then(|| key.with(read))
}

fn lossy(value: &http::HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

impl HostState {
    pub fn new(plugin: Arc<str>, memory: u64) -> Self {
        let wasi = WasiCtxBuilder::new()
            .stdout(PluginOutput {
                plugin: Arc::clone(&plugin),
                stream: "stdout",
            })
            .stderr(PluginOutput {
                plugin: Arc::clone(&plugin),
                stream: "stderr",
            })
            // wasmtime-wasi's defaults, stated because `wasi.rs` relies on them: with no
            // socket, no socket operation that could wait can be reached.
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        Self {
            plugin,
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                memory: usize::try_from(memory).unwrap_or(usize::MAX),
                exceeded: false,
            },
        }
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
        emit(&self.plugin, level, "log", message.as_bytes());
    }

    fn header(&mut self, message: Message, name: String) -> Vec<String> {
        // An invalid name finds nothing: `get_all` parses it and matches no entry.
        lent(message, |headers| {
            headers.get_all(name.as_str()).iter().map(lossy).collect()
        })
        .unwrap_or_default()
    }

    fn all_headers(&mut self, message: Message) -> types::Headers {
        lent(message, |headers| {
            headers
                .iter()
                .map(|(name, value)| (name.as_str().to_owned(), lossy(value)))
                .collect()
        })
        .unwrap_or_default()
    }
}

fn emit(plugin: &str, level: LogLevel, stream: &str, message: &[u8]) {
    let cut = &message[..message.len().min(MAX_LOG_LINE)];
    let message = String::from_utf8_lossy(cut);
    let message = message.trim_end();
    match level {
        LogLevel::Trace => tracing::trace!(target: "gateway::plugin", plugin, stream, "{message}"),
        LogLevel::Debug => tracing::debug!(target: "gateway::plugin", plugin, stream, "{message}"),
        LogLevel::Info => tracing::info!(target: "gateway::plugin", plugin, stream, "{message}"),
        LogLevel::Warn => tracing::warn!(target: "gateway::plugin", plugin, stream, "{message}"),
        LogLevel::Error => tracing::error!(target: "gateway::plugin", plugin, stream, "{message}"),
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
    plugin: Arc<str>,
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
    plugin: Arc<str>,
    stream: &'static str,
    line: Vec<u8>,
}

impl LineLogger {
    fn new(output: &PluginOutput) -> Self {
        Self {
            plugin: Arc::clone(&output.plugin),
            stream: output.stream,
            line: Vec::new(),
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
            emit(&self.plugin, level, self.stream, &self.line);
            self.line.clear();
            bytes = &bytes[end + 1..];
        }
        self.keep(bytes);
    }

    /// Keeps at most one line's worth; a plugin printing without newlines cannot grow it.
    fn keep(&mut self, bytes: &[u8]) {
        let room = MAX_LOG_LINE.saturating_sub(self.line.len());
        self.line.extend_from_slice(&bytes[..bytes.len().min(room)]);
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

    /// Runs `read` on a fresh state with an exchange's headers lent.
    fn with_exchange<R>(read: impl FnOnce(&mut HostState) -> R) -> R {
        let mut request = http::HeaderMap::new();
        request.append("x-tenant", http::HeaderValue::from_static("acme"));
        request.append("accept", http::HeaderValue::from_static("text/html"));
        request.append("accept", http::HeaderValue::from_static("application/json"));
        let mut response = http::HeaderMap::new();
        let not_utf8 = http::HeaderValue::from_bytes(b"caf\xe9").expect("opaque bytes are valid");
        response.append("x-degraded", not_utf8);
        let mut state = HostState::new("test".into(), 1 << 20);
        let exchange = ExchangeHeaders {
            request: &request,
            response: Some(&response),
        };
        exchange.lend(|| read(&mut state))
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
                    ("x-tenant".to_string(), "acme".to_string()),
                    ("accept".to_string(), "text/html".to_string()),
                    ("accept".to_string(), "application/json".to_string()),
                ]
            );
        });
    }

    #[test]
    fn nothing_is_readable_outside_a_call_or_without_a_response() {
        // Outside a call (a plugin's `init`): no headers.
        let mut idle = HostState::new("test".into(), 1 << 20);
        assert!(idle.all_headers(Message::Request).is_empty());
        assert!(idle.header(Message::Request, "host".into()).is_empty());
        // A fallback's call lends the request only.
        let mut request = http::HeaderMap::new();
        request.append("host", http::HeaderValue::from_static("api.test"));
        let lent = ExchangeHeaders {
            request: &request,
            response: None,
        };
        lent.lend(|| {
            assert_eq!(idle.header(Message::Request, "host".into()), ["api.test"]);
            assert!(idle.all_headers(Message::Response).is_empty());
        });
        // And nothing once the call is over.
        assert!(idle.header(Message::Request, "host".into()).is_empty());
    }
}
