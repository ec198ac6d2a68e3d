//! An origin that records the exact bytes of every request it receives and parses them
//! strictly (one Content-Length of plain digits, or `Transfer-Encoding: chunked` alone;
//! never both), so a test can compare what reached the upstream with what the gateway
//! says it forwarded. Answers each request `200 ok`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the origin read it, or why it could not.
#[derive(Debug, Clone)]
pub struct Seen {
    pub connection: u64,
    pub raw: Vec<u8>,
    pub request: Result<SeenRequest, String>,
}

#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    /// Connections holding the start of a request not yet complete.
    partial: AtomicUsize,
    connections: AtomicU64,
    /// Connections whose end (or failure) has been read and recorded.
    ended: AtomicU64,
    /// The number of `drained`'s own connection, once read.
    barrier: AtomicU64,
}

pub struct RecordingOrigin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RecordingOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RecordingOrigin {
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let accept = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let id = accept.connections.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(serve(stream, id, Arc::clone(&accept)));
            }
        });
        Ok(Self { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many requests (or unreadable remains) have been recorded.
    pub fn count(&self) -> usize {
        self.seen().len()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared
            .seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Once the gateway is gone (so every connection it made is closed): waits until
    /// every connection made so far has been read to its end, so that everything that
    /// was sent is recorded. A connection of our own, marked `BARRIER`, goes last: the
    /// kernel hands out connections in order, so once it is read, every earlier one has
    /// been accepted. False when that does not happen within `limit`.
    pub async fn drained(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let Ok(mut barrier) = TcpStream::connect(self.addr).await else {
            return false;
        };
        if barrier.write_all(BARRIER).await.is_err() {
            return false;
        }
        loop {
            let mine = self.shared.barrier.load(Ordering::SeqCst);
            if mine > 0 && self.shared.ended.load(Ordering::SeqCst) >= mine - 1 {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

const BARRIER: &[u8] = b"BARRIER";

fn record(shared: &Shared, seen: Seen) {
    if let Ok(mut list) = shared.seen.lock() {
        list.push(seen);
    }
}

async fn serve(mut stream: TcpStream, connection: u64, shared: Arc<Shared>) {
    let mut buffer: Vec<u8> = Vec::new();
    let mut partial = false;
    let set_partial = |now: bool, was: &mut bool| {
        if now != *was {
            if now {
                shared.partial.fetch_add(1, Ordering::SeqCst);
            } else {
                shared.partial.fetch_sub(1, Ordering::SeqCst);
            }
            *was = now;
        }
    };
    loop {
        if buffer == BARRIER {
            shared.barrier.store(connection, Ordering::SeqCst);
            set_partial(false, &mut partial);
            return;
        }
        // Answer every complete request already buffered.
        loop {
            match parse(&buffer) {
                Ok(Some((request, used))) => {
                    let raw: Vec<u8> = buffer.drain(..used).collect();
                    let close = request
                        .header("connection")
                        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                    record(
                        &shared,
                        Seen {
                            connection,
                            raw,
                            request: Ok(request),
                        },
                    );
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(reply).await.is_err() || close {
                        set_partial(false, &mut partial);
                        shared.ended.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
                Ok(None) => break,
                Err(why) => {
                    record(
                        &shared,
                        Seen {
                            connection,
                            raw: std::mem::take(&mut buffer),
                            request: Err(why),
                        },
                    );
                    set_partial(false, &mut partial);
                    shared.ended.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
        }
        set_partial(!buffer.is_empty(), &mut partial);
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(n) if n > 0 => {
                buffer.extend_from_slice(&chunk[..n]);
                set_partial(true, &mut partial);
            }
            _ => {
                if !buffer.is_empty() {
                    record(
                        &shared,
                        Seen {
                            connection,
                            raw: std::mem::take(&mut buffer),
                            request: Err("incomplete request, then the connection ended".into()),
                        },
                    );
                }
                set_partial(false, &mut partial);
                shared.ended.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
    }
}

/// One strictly framed request at the start of `buffer`, and its length; None when
/// more bytes are needed.
fn parse(buffer: &[u8]) -> Result<Option<(SeenRequest, usize)>, String> {
    if buffer.is_empty() {
        return Ok(None);
    }
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    let head = match req.parse(buffer) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("unparseable head: {e}")),
    };
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let values = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let lengths = values("content-length");
    let codings = values("transfer-encoding");
    let (body, used) = match (lengths.as_slice(), codings.as_slice()) {
        ([], []) => (Vec::new(), head),
        ([_, ..], [_, ..]) => return Err("both Content-Length and Transfer-Encoding".into()),
        ([length], []) => {
            if length.is_empty() || !length.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("Content-Length `{length}`"));
            }
            let length: usize = length.parse().map_err(|_| "Content-Length overflow")?;
            if buffer.len() < head + length {
                return Ok(None);
            }
            (buffer[head..head + length].to_vec(), head + length)
        }
        ([..], [coding]) if *coding == "chunked" => match chunked(&buffer[head..])? {
            Some((body, n)) => (body, head + n),
            None => return Ok(None),
        },
        _ => return Err(format!("framing {lengths:?} / {codings:?}")),
    };
    Ok(Some((
        SeenRequest {
            method: req.method.unwrap_or_default().to_string(),
            target: req.path.unwrap_or_default().to_string(),
            headers,
            body,
        },
        used,
    )))
}

/// A chunked body (no extensions, no trailers: the gateway frames what it sends).
fn chunked(bytes: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(line_end) = bytes[at..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&bytes[at..at + line_end]).map_err(|_| "chunk size")?;
        if size_text.is_empty() || !size_text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("chunk size line `{}`", size_text.escape_default()));
        }
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "chunk size overflow")?;
        at += line_end + 2;
        if size == 0 {
            if bytes.len() < at + 2 {
                return Ok(None);
            }
            if &bytes[at..at + 2] != b"\r\n" {
                return Err("trailer section after the last chunk".into());
            }
            return Ok(Some((body, at + 2)));
        }
        if bytes.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&bytes[at..at + size]);
        if &bytes[at + size..at + size + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        at += size + 2;
    }
}
