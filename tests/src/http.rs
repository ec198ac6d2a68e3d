//! A deliberately small HTTP/1.1 client: explicit connections, so tests can assert
//! keep-alive, send odd requests and hold requests open.

use std::io;
use std::net::SocketAddr;

use gateway::demo::http1;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body text when it is not JSON (tests only).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.text()))
    }

    /// The string at `pointer` in the JSON body; empty when it is not there.
    pub fn json_str(&self, pointer: &str) -> String {
        self.json()
            .pointer(pointer)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    }
}

/// A byte stream a connection can run over: plain TCP or TLS.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// One client connection, reused across requests (keep-alive).
pub struct Conn {
    stream: Box<dyn Transport>,
    buffer: Vec<u8>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self::over(stream))
    }

    /// A connection over an already established stream (a TLS session, say).
    pub fn over(stream: impl Transport + 'static) -> Self {
        Self {
            stream: Box::new(stream),
            buffer: Vec::new(),
        }
    }

    /// Writes raw bytes (a request in pieces, a slow client).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Reads the next response (after `send_raw`).
    pub async fn response(&mut self) -> io::Result<Response> {
        self.read_response(false).await
    }

    /// Whether the gateway closed the connection: a read sees end of stream (or a
    /// reset) before `limit`. Bytes it sent first are kept for `response`.
    pub async fn closed_within(&mut self, limit: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(n)) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
            head.push_str("host: gateway.test\r\n");
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() || method == "POST" || method == "PUT" {
            head.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes).await?;
        self.read_response(method == "HEAD").await
    }

    pub async fn get(&mut self, path: &str) -> io::Result<Response> {
        self.request("GET", path, &[], b"").await
    }

    async fn read_more(&mut self) -> io::Result<()> {
        let have = self.buffer.len();
        http1::fill(&mut self.stream, &mut self.buffer, have + 1).await
    }

    async fn read_response(&mut self, head_only: bool) -> io::Result<Response> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(len) = parsed
                .parse(&self.buffer)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            {
                let status = parsed.code.unwrap_or(0);
                let headers = http1::owned_headers(parsed.headers);
                self.buffer.drain(..len);
                let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
                let body = if head_only || status == 204 || status == 304 {
                    Vec::new()
                } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
                    http1::read_chunked(&mut self.stream, &mut self.buffer).await?
                } else if let Some(length) =
                    find("content-length").and_then(|v| v.parse::<usize>().ok())
                {
                    http1::fill(&mut self.stream, &mut self.buffer, length).await?;
                    self.buffer.drain(..length).collect()
                } else {
                    // Close-delimited.
                    while self.read_more().await.is_ok() {}
                    std::mem::take(&mut self.buffer)
                };
                return Ok(Response {
                    status,
                    headers,
                    body,
                });
            }
            self.read_more().await?;
        }
    }
}

/// One request on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    Conn::connect(addr).await?.get(path).await
}
