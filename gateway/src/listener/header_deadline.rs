//! The client header read timeout. Pingora's HTTP/1 read timeout restarts on every
//! read, so a client sending one header byte a second would hold its connection
//! forever; this wrapper around the connection bounds the whole header instead.
//!
//! The clock starts when the connection is handed over, and again at the first byte of
//! each later request on it (time before that is keep-alive idle time, which Pingora
//! bounds). It stops at the blank line that ends the header. The proxy says when a
//! request is finished (`request_finished`, called from `logging`), through a
//! task-local: Pingora serves an HTTP/1 connection's requests one after another on
//! the task this wrapper's future runs on.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    Stream, TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::{Limit, LimitReporter};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

tokio::task_local! {
    static BOUNDARY: Arc<RequestBoundary>;
}

/// Set when a response is complete: the next byte read starts a new request header.
#[derive(Debug, Default)]
pub struct RequestBoundary {
    finished: AtomicBool,
}

/// Runs a connection's requests with `boundary` reachable from `request_finished`.
pub async fn scope<F: Future>(boundary: Arc<RequestBoundary>, f: F) -> F::Output {
    BOUNDARY.scope(boundary, f).await
}

/// Called by the proxy once a request is done; the next request's header is timed.
pub fn request_finished() {
    let _ = BOUNDARY.try_with(|b| b.finished.store(true, Ordering::Relaxed));
}

/// Finds the blank line that ends a request header, however the reads split it.
#[derive(Debug, Default)]
struct HeaderEnd {
    /// Whether the last byte that was not `\r` was `\n`: a second `\n` ends it.
    lf: bool,
}

impl HeaderEnd {
    fn feed(&mut self, bytes: &[u8]) -> bool {
        for &b in bytes {
            match b {
                b'\n' if self.lf => return true,
                b'\n' => self.lf = true,
                b'\r' => {}
                _ => self.lf = false,
            }
        }
        false
    }
}

#[derive(Debug)]
enum Phase {
    /// Reading a request header that must end by the deadline. `preface` counts the
    /// bytes of the h2c preface seen while the connection's first bytes could still be
    /// one (None once they cannot).
    Header {
        scan: HeaderEnd,
        preface: Option<usize>,
    },
    /// Header done; body bytes and idle time are Pingora's to bound.
    Body,
    /// An h2c connection: HTTP/2 frames its own requests.
    Passthrough,
}

pub struct HeaderDeadline {
    inner: Stream,
    timeout: Duration,
    phase: Phase,
    /// When the header being read must be complete.
    deadline: Instant,
    /// Armed only when a header read has to wait: most headers arrive in one read, and
    /// then no timer is touched at all.
    timer: Option<Pin<Box<Sleep>>>,
    /// Bytes read before the proxy took the connection (`first_bytes`), handed out first.
    prefetched: Vec<u8>,
    boundary: Arc<RequestBoundary>,
    limits: Arc<LimitReporter>,
}

impl std::fmt::Debug for HeaderDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderDeadline")
            .field("inner", &self.inner)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl HeaderDeadline {
    pub fn new(
        inner: Stream,
        timeout: Duration,
        boundary: Arc<RequestBoundary>,
        limits: Arc<LimitReporter>,
    ) -> Self {
        Self {
            inner,
            timeout,
            phase: Phase::Header {
                scan: HeaderEnd::default(),
                preface: Some(0),
            },
            deadline: Instant::now() + timeout,
            timer: None,
            prefetched: Vec::new(),
            boundary,
            limits,
        }
    }

    /// Follows the bytes just read through the header / body boundary.
    fn observe(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if matches!(self.phase, Phase::Body)
            && self.boundary.finished.swap(false, Ordering::Relaxed)
        {
            self.phase = Phase::Header {
                scan: HeaderEnd::default(),
                preface: None,
            };
            self.deadline = Instant::now() + self.timeout;
        }
        let Phase::Header { scan, preface } = &mut self.phase else {
            return;
        };
        if let Some(matched) = preface {
            let want = &H2_PREFACE[*matched..];
            let n = want.len().min(bytes.len());
            if bytes[..n] == want[..n] {
                *matched += n;
                if *matched == H2_PREFACE.len() {
                    self.phase = Phase::Passthrough;
                }
                // A preface prefix holds no line end: nothing to scan.
                return;
            }
            *preface = None;
        }
        if scan.feed(bytes) {
            self.phase = Phase::Body;
        }
    }
}

impl HeaderDeadline {
    /// Waits, within the header deadline, for the client's first bytes, and keeps them
    /// for the proxy. Pingora drops a fresh connection whose request it has not read
    /// yet when shutdown begins (a graceful upgrade, SIGTERM); with the bytes already
    /// here it reads the request first and answers it. False: the client closed, sent
    /// nothing in time (counted), or failed. `ahead`: bytes already read past a PROXY
    /// header, which count as the first bytes.
    pub async fn first_bytes(&mut self, ahead: Vec<u8>) -> bool {
        if !ahead.is_empty() {
            self.prefetched = ahead;
            return true;
        }
        let mut chunk = vec![0u8; 4096];
        let read = tokio::time::timeout_at(self.deadline, self.inner.read(&mut chunk)).await;
        match read {
            Ok(Ok(n)) if n > 0 => {
                chunk.truncate(n);
                self.prefetched = chunk;
                true
            }
            Ok(_) => false,
            Err(_) => {
                self.limits.fired(
                    Limit::HeaderReadTimeout,
                    "connection closed: no request within header_read_timeout",
                );
                false
            }
        }
    }

    /// Whether the header deadline has passed; if not, wakes the task when it does.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

impl AsyncRead for HeaderDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefetched.is_empty() {
            let n = this.prefetched.len().min(buf.remaining());
            let mut bytes = std::mem::take(&mut this.prefetched);
            // Usually all of it fits: the split is then empty and allocates nothing.
            let rest = bytes.split_off(n);
            this.observe(&bytes);
            buf.put_slice(&bytes);
            this.prefetched = rest;
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.observe(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if matches!(this.phase, Phase::Header { .. }) && this.expired(cx) {
                    this.limits.fired(
                        Limit::HeaderReadTimeout,
                        "connection closed: request header not complete within header_read_timeout",
                    );
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request header not received within header_read_timeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for HeaderDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for HeaderDeadline {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for HeaderDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeaderDeadline {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeaderDeadline {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeaderDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for HeaderDeadline {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for HeaderDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if self.prefetched.is_empty() {
            return self.inner.try_peek(buf).await;
        }
        // Peek through what was read ahead, reading on until there is enough.
        while self.prefetched.len() < buf.len() {
            let mut chunk = [0u8; 512];
            match self.inner.read(&mut chunk).await? {
                0 => break,
                n => self.prefetched.extend_from_slice(&chunk[..n]),
            }
        }
        let n = buf.len().min(self.prefetched.len());
        buf[..n].copy_from_slice(&self.prefetched[..n]);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::HeaderEnd;

    fn ends_at(chunks: &[&[u8]]) -> Option<usize> {
        let mut scan = HeaderEnd::default();
        chunks.iter().position(|c| scan.feed(c))
    }

    #[test]
    fn finds_the_blank_line_across_reads() {
        assert_eq!(ends_at(&[b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"]), Some(0));
        assert_eq!(
            ends_at(&[b"GET / HTTP/1.1\r\nhost: a\r", b"\n", b"\r", b"\nbody"]),
            Some(3)
        );
        assert_eq!(ends_at(&[b"GET / HTTP/1.1\n\n"]), Some(0));
        assert_eq!(
            ends_at(&[b"GET / HTTP/1.1\r\nhost: a\r\n", b"x-slow: 1"]),
            None
        );
        assert_eq!(ends_at(&[b"G", b"E", b"T", b" "]), None);
    }
}
