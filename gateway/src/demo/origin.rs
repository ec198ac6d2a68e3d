//! A small HTTP/1.1 origin server with fault injection: the demo's simulated upstreams
//! and the test suite's scripted ones. Real sockets, keep-alive, chunked request bodies.
//!
//! Faults are set in code (`Origin::faults`) or over HTTP on the origin itself:
//! `POST /_fault?failure_rate=0.5&latency=200ms&reset_rate=0.1&down_for=10s&status=503`
//! (or the same as a JSON body, also `{"failure_rate": 0.7, "is_healthy": false,
//! "response_time_ms": 2000}`; anything else is a 400 listing what is accepted),
//! `GET /_fault` shows them, `DELETE /_fault` clears them.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::http1::{fill, owned_headers, read_chunked};
use crate::config::units::parse_duration;

/// A request as the origin received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub peer: SocketAddr,
    /// Which accepted connection carried it (counts from 1).
    pub connection: u64,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("/")
    }

    pub fn query(&self, key: &str) -> Option<&str> {
        let query = self.target.split_once('?')?.1;
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }
}

/// What goes wrong on the wire instead of (or in the middle of) a normal response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFault {
    /// Reset the connection before answering.
    Reset,
    /// Send the head and half the body, then reset.
    ResetMidBody,
}

/// The origin's answer to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
    pub fault: Option<WireFault>,
}

impl Reply {
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
            delay: Duration::ZERO,
            fault: None,
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: body.into().into_bytes(),
            delay: Duration::ZERO,
            fault: None,
        }
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn with_fault(mut self, fault: WireFault) -> Self {
        self.fault = Some(fault);
        self
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// Injected faults, applied before the handler runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultSettings {
    /// Share of requests answered with `failure_status` (0..=1).
    pub failure_rate: f64,
    pub failure_status: u16,
    /// Added to every response.
    pub latency: Duration,
    /// Share of requests whose connection is reset instead of answered (0..=1).
    pub reset_rate: f64,
    /// While set and in the future, the port refuses connections.
    pub down_until: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct Faults {
    settings: Mutex<FaultSettings>,
    changed: Notify,
}

impl Faults {
    pub fn get(&self) -> FaultSettings {
        self.settings.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn update(&self, change: impl FnOnce(&mut FaultSettings)) {
        if let Ok(mut settings) = self.settings.lock() {
            change(&mut settings);
            if settings.failure_status == 0 {
                settings.failure_status = 500;
            }
        }
        self.changed.notify_waiters();
    }

    pub fn clear(&self) {
        self.update(|s| *s = FaultSettings::default());
    }

    /// Refuse connections for `period`, then come back by itself.
    pub fn down_for(&self, period: Duration) {
        self.update(|s| s.down_until = Some(Instant::now() + period));
    }

    fn down_until(&self) -> Option<Instant> {
        self.get()
            .down_until
            .filter(|until| *until > Instant::now())
    }

    fn describe(&self) -> serde_json::Value {
        let s = self.get();
        serde_json::json!({
            "failure_rate": s.failure_rate,
            "failure_status": if s.failure_status == 0 { 500 } else { s.failure_status },
            "latency_ms": s.latency.as_millis() as u64,
            "reset_rate": s.reset_rate,
            "down_for_ms": s.down_until.map_or(0, |u| u.saturating_duration_since(Instant::now()).as_millis() as u64),
        })
    }

    /// Handles `/_fault` on the origin itself.
    fn control(&self, req: &Request) -> Reply {
        match req.method.as_str() {
            "GET" => return Reply::json(200, &self.describe()),
            "DELETE" => {
                self.clear();
                return Reply::json(200, &self.describe());
            }
            "POST" | "PUT" => {}
            _ => return Reply::text(405, "use GET, POST or DELETE"),
        }
        let change = match fault_change(req) {
            Ok(change) => change,
            Err(message) => {
                return Reply::json(
                    400,
                    &serde_json::json!({ "error": message, "accepted": FAULT_KEYS }),
                );
            }
        };
        self.update(|s| change.apply(s));
        Reply::json(200, &self.describe())
    }
}

/// What `POST /_fault` may set, as query parameters or as a JSON object body.
pub const FAULT_KEYS: &[&str] = &[
    "failure_rate",
    "status",
    "failure_status",
    "latency",
    "latency_ms",
    "response_time_ms",
    "reset_rate",
    "down_for",
    "down_for_ms",
    "is_healthy",
];

/// One `POST /_fault`'s changes; anything not named stays as it was.
#[derive(Debug, Default)]
struct FaultChange {
    failure_rate: Option<f64>,
    reset_rate: Option<f64>,
    latency: Option<Duration>,
    down_for: Option<Duration>,
    status: Option<u16>,
    healthy: Option<bool>,
}

impl FaultChange {
    fn apply(self, s: &mut FaultSettings) {
        if let Some(healthy) = self.healthy {
            // Unhealthy: every request fails; healthy: none does and the port is open.
            s.failure_rate = if healthy { 0.0 } else { 1.0 };
            if healthy {
                s.down_until = None;
            }
        }
        if let Some(v) = self.failure_rate {
            s.failure_rate = v;
        }
        if let Some(v) = self.reset_rate {
            s.reset_rate = v;
        }
        if let Some(v) = self.latency {
            s.latency = v;
        }
        if let Some(v) = self.status {
            s.failure_status = v;
        }
        if let Some(v) = self.down_for {
            s.down_until = Some(Instant::now() + v);
        }
    }
}

/// Reads the query and, when there is one, the JSON object body; a key it does not
/// know, or a value it cannot use, is an error that says which (a 200 that changed
/// nothing would mislead).
fn fault_change(req: &Request) -> Result<FaultChange, String> {
    let mut settings: Vec<(String, serde_json::Value)> = req
        .target
        .split_once('?')
        .map(|(_, query)| query)
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k.to_string(), serde_json::Value::String(v.to_string()))
        })
        .collect();
    if !req.body.iter().all(u8::is_ascii_whitespace) {
        match serde_json::from_slice::<serde_json::Value>(&req.body) {
            Ok(serde_json::Value::Object(map)) => settings.extend(map),
            _ => return Err("the body must be a JSON object of settings".into()),
        }
    }
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let number = |key: &str, v: &serde_json::Value| -> Result<f64, String> {
        text(v)
            .parse::<f64>()
            .map_err(|_| format!("{key} must be a number, got `{}`", text(v)))
    };
    let ratio = |key: &str, v: &serde_json::Value| -> Result<f64, String> {
        let r = number(key, v)?;
        (0.0..=1.0).contains(&r).then_some(r).ok_or(format!(
            "{key} must be a number from 0 to 1, got `{}`",
            text(v)
        ))
    };
    let millis = |key: &str, v: &serde_json::Value| -> Result<Duration, String> {
        let ms = number(key, v)?;
        (0.0..=86_400_000.0)
            .contains(&ms)
            .then(|| Duration::from_millis(ms as u64))
            .ok_or(format!("{key} must be 0 to 86400000 milliseconds"))
    };
    let mut change = FaultChange::default();
    for (key, value) in &settings {
        match key.as_str() {
            "failure_rate" => change.failure_rate = Some(ratio(key, value)?),
            "reset_rate" => change.reset_rate = Some(ratio(key, value)?),
            "latency" => {
                change.latency =
                    Some(parse_duration(&text(value)).map_err(|e| format!("{key}: {e}"))?)
            }
            "latency_ms" | "response_time_ms" => change.latency = Some(millis(key, value)?),
            "down_for" => {
                change.down_for =
                    Some(parse_duration(&text(value)).map_err(|e| format!("{key}: {e}"))?)
            }
            "down_for_ms" => change.down_for = Some(millis(key, value)?),
            "status" | "failure_status" => {
                change.status = Some(
                    text(value)
                        .parse::<u16>()
                        .ok()
                        .filter(|s| (100..=599).contains(s))
                        .ok_or(format!("{key} must be 100..599, got `{}`", text(value)))?,
                )
            }
            "is_healthy" => {
                change.healthy = Some(match text(value).as_str() {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(format!("is_healthy must be true or false, got `{other}`"));
                    }
                })
            }
            other => {
                return Err(format!(
                    "unknown setting `{}`; accepted: {}",
                    other.escape_debug(),
                    FAULT_KEYS.join(", ")
                ));
            }
        }
    }
    Ok(change)
}

/// Counters the tests assert on.
#[derive(Debug, Default)]
pub struct OriginStats {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
}

impl OriginStats {
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A running origin; stops when dropped.
pub struct Origin {
    addr: SocketAddr,
    stats: Arc<OriginStats>,
    faults: Arc<Faults>,
    task: JoinHandle<()>,
}

impl Origin {
    /// Starts on an ephemeral loopback port.
    pub async fn start(handler: Handler) -> io::Result<Self> {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0)), handler).await
    }

    pub async fn bind(addr: SocketAddr, handler: Handler) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(OriginStats::default());
        let faults = Arc::new(Faults::default());
        let task = tokio::spawn(accept_loop(
            listener,
            addr,
            handler,
            Arc::clone(&stats),
            Arc::clone(&faults),
        ));
        Ok(Self {
            addr,
            stats,
            faults,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> &OriginStats {
        &self.stats
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    mut listener: TcpListener,
    addr: SocketAddr,
    handler: Handler,
    stats: Arc<OriginStats>,
    faults: Arc<Faults>,
) {
    loop {
        if let Some(until) = faults.down_until() {
            // Hard down: close the port so connects are refused, reopen when the time is up.
            drop(listener);
            tokio::time::sleep_until(until.into()).await;
            listener = loop {
                match TcpListener::bind(addr).await {
                    Ok(l) => break l,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
            continue;
        }
        let changed = faults.changed.notified();
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let id = stats.connections.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(serve_connection(stream, peer, id, Arc::clone(&handler), Arc::clone(&stats), Arc::clone(&faults)));
            }
            _ = changed => {}
        }
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    connection: u64,
    handler: Handler,
    stats: Arc<OriginStats>,
    faults: Arc<Faults>,
) {
    let _ = stream.set_nodelay(true);
    let mut buffer = Vec::with_capacity(4096);
    loop {
        let request = match read_request(&mut stream, &mut buffer, peer, connection).await {
            Ok(Some(request)) => request,
            Ok(None) | Err(_) => return,
        };
        stats.requests.fetch_add(1, Ordering::SeqCst);
        let keep_alive = !request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let reply = answer(&request, &handler, &faults);
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        match reply.fault {
            Some(WireFault::Reset) => return reset(stream),
            Some(WireFault::ResetMidBody) => {
                let head = response_head(&reply);
                let half = &reply.body[..reply.body.len() / 2];
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(half).await;
                let _ = stream.flush().await;
                return reset(stream);
            }
            None => {}
        }
        let mut bytes = response_head(&reply).into_bytes();
        bytes.extend_from_slice(&reply.body);
        if stream.write_all(&bytes).await.is_err() || !keep_alive {
            return;
        }
    }
}

fn answer(request: &Request, handler: &Handler, faults: &Faults) -> Reply {
    if request.path() == "/_fault" {
        return faults.control(request);
    }
    let settings = faults.get();
    let roll = |rate: f64| rate > 0.0 && rand::random::<f64>() < rate;
    let reply =
        if settings.down_until.is_some_and(|u| u > Instant::now()) || roll(settings.reset_rate) {
            Reply::text(500, "").with_fault(WireFault::Reset)
        } else if roll(settings.failure_rate) {
            let status = if settings.failure_status == 0 {
                500
            } else {
                settings.failure_status
            };
            Reply::json(status, &serde_json::json!({ "error": "injected failure" }))
        } else {
            handler(request)
        };
    let delay = reply.delay + settings.latency;
    reply.delayed(delay)
}

fn reset(stream: TcpStream) {
    // SO_LINGER 0 turns close() into an RST: what a crashing server looks like.
    if let Ok(std_stream) = stream.into_std() {
        let _ = socket2::SockRef::from(&std_stream).set_linger(Some(Duration::ZERO));
    }
}

fn response_head(reply: &Reply) -> String {
    let reason = http::StatusCode::from_u16(reply.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown");
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-length: {}\r\n",
        reply.status,
        reply.body.len()
    );
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

const MAX_HEAD: usize = 64 * 1024;

/// Reads one request; Ok(None) when the peer closed cleanly between requests.
async fn read_request(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    peer: SocketAddr,
    connection: u64,
) -> io::Result<Option<Request>> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(buffer) {
            Ok(httparse::Status::Complete(head_len)) => {
                let method = parsed.method.unwrap_or("GET").to_string();
                let target = parsed.path.unwrap_or("/").to_string();
                let headers = owned_headers(parsed.headers);
                buffer.drain(..head_len);
                let find = |name: &str| {
                    headers
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.clone())
                };
                let body = if find("transfer-encoding")
                    .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
                {
                    read_chunked(stream, buffer).await?
                } else {
                    let length: usize = find("content-length")
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    fill(stream, buffer, length).await?;
                    buffer.drain(..length).collect()
                };
                return Ok(Some(Request {
                    method,
                    target,
                    headers,
                    body,
                    peer,
                    connection,
                }));
            }
            Ok(httparse::Status::Partial) if buffer.len() < MAX_HEAD => {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return if buffer.is_empty() {
                        Ok(None)
                    } else {
                        Err(io::ErrorKind::UnexpectedEof.into())
                    };
                }
                buffer.extend_from_slice(&chunk[..n]);
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "bad request head",
                ));
            }
        }
    }
}
