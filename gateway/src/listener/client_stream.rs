//! Our wrapper around a client's connection (Pingora's `Stream`, after TLS): the
//! deadlines its bytes must meet that Pingora's own per-read timeouts cannot express.
//!
//! Reading: every request header must be complete within `header_read_timeout`: an
//! HTTP/1 header up to its blank line, an HTTP/2 header block up to END_HEADERS. On
//! HTTP/2 the first request is timed from the moment the connection is handed over, so
//! a client that sends no preface, or only SETTINGS and PINGs, is cut off too. Pingora's
//! HTTP/1 read timeout restarts on every read (a byte a second would hold a connection
//! forever) and Pingora has no read timeout on HTTP/2 at all.
//!
//! On HTTP/1 keep-alive the clock starts again at the first byte of each later request
//! (time before that is idle time, which Pingora bounds). The proxy says when a request
//! is finished (`request_finished`, called from `logging`) through a task-local: Pingora
//! serves an HTTP/1 connection's requests one after another on this task.
//!
//! Writing: a write or flush that makes no progress for `write_timeout` (the client
//! stopped reading) fails, and the connection with it, whatever the protocol.
//!
//! h2c: on an `http2: true` plaintext listener Pingora peeks 24 bytes for the preface.
//! `try_peek` stops as soon as the bytes cannot be the preface, so a short HTTP/1 request
//! is answered instead of waited on, and it waits under the header deadline.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::{Peek, Stream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::header_scan::{Blocks, FrameScan, H2_PREFACE, HeaderEnd};
use super::{Limit, LimitReporter};

tokio::task_local! {
    static BOUNDARY: Arc<RequestBoundary>;
}

/// Set when a response is complete: the next byte read starts a new request header.
#[derive(Debug, Default)]
pub struct RequestBoundary {
    finished: AtomicBool,
}

/// Runs a connection's requests with `boundary` reachable from `request_finished`.
/// (Not an `async fn`: that would hold `f` twice in the connection's future.)
pub fn scope<F: Future>(boundary: Arc<RequestBoundary>, f: F) -> impl Future<Output = F::Output> {
    BOUNDARY.scope(boundary, f)
}

/// Called by the proxy once a request is done; the next request's header is timed.
pub fn request_finished() {
    let _ = BOUNDARY.try_with(|b| b.finished.store(true, Ordering::Relaxed));
}

/// How the connection speaks, as far as it is known when it is handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1, or h2 with prior knowledge when `h2c` (told apart by the first bytes).
    Http1 { h2c: bool },
    /// HTTP/2 negotiated by ALPN: the preface comes first.
    H2,
}

/// The timeouts one connection is held to (its listener's, when it was accepted).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header: Duration,
    pub write: Duration,
}

#[derive(Debug)]
enum Phase {
    /// Reading an HTTP/1 request header. `preface` counts the h2c preface bytes seen
    /// while the connection's first bytes could still be one (None once they cannot).
    Http1Header {
        scan: HeaderEnd,
        preface: Option<usize>,
    },
    /// HTTP/1 header done: body bytes and idle time are Pingora's to bound.
    Http1Body,
    /// HTTP/2 frames, followed to time each header block.
    H2(FrameScan),
}

pub struct ClientStream {
    inner: Stream,
    timeouts: Timeouts,
    phase: Phase,
    /// When the header (block) being read must be complete; None when none is.
    deadline: Option<Instant>,
    /// Armed only when a header read has to wait: most headers arrive in one read, and
    /// then no timer is touched at all.
    header_timer: Option<Pin<Box<Sleep>>>,
    /// While a write waits for the client to read: until when it may.
    write_deadline: Option<Instant>,
    write_timer: Option<Pin<Box<Sleep>>>,
    /// The write timeout fired: later writes fail at once (and it is counted once).
    write_failed: bool,
    /// Bytes read before Pingora took the connection (`first_bytes`, `try_peek`),
    /// handed out first.
    prefetched: Vec<u8>,
    boundary: Arc<RequestBoundary>,
    limits: Arc<LimitReporter>,
}

impl std::fmt::Debug for ClientStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientStream")
            .field("inner", &self.inner)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

/// What the bytes of one read did to the HTTP/1 header being read.
enum Http1Step {
    Continue,
    HeaderDone,
    /// The h2c preface is complete; the rest of the read is frames.
    Preface {
        rest_at: usize,
    },
}

impl ClientStream {
    pub fn new(
        inner: Stream,
        protocol: Protocol,
        timeouts: Timeouts,
        boundary: Arc<RequestBoundary>,
        limits: Arc<LimitReporter>,
    ) -> Self {
        let phase = match protocol {
            Protocol::Http1 { h2c } => Phase::Http1Header {
                scan: HeaderEnd::default(),
                preface: h2c.then_some(0),
            },
            Protocol::H2 => Phase::H2(FrameScan::from_preface()),
        };
        Self {
            inner,
            timeouts,
            phase,
            deadline: Some(Instant::now() + timeouts.header),
            header_timer: None,
            write_deadline: None,
            write_timer: None,
            write_failed: false,
            prefetched: Vec::new(),
            boundary,
            limits,
        }
    }

    /// Follows the bytes just read through the request headers.
    fn observe(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if matches!(self.phase, Phase::Http1Body) {
            if !self.boundary.finished.swap(false, Ordering::Relaxed) {
                return;
            }
            self.phase = Phase::Http1Header {
                scan: HeaderEnd::default(),
                preface: None,
            };
            self.deadline = Some(Instant::now() + self.timeouts.header);
        }
        let step = match &mut self.phase {
            Phase::Http1Header { scan, preface } => http1_step(scan, preface, bytes),
            Phase::H2(scan) => {
                let blocks = scan.feed(bytes);
                self.on_blocks(blocks);
                return;
            }
            Phase::Http1Body => return,
        };
        match step {
            Http1Step::Continue => {}
            Http1Step::HeaderDone => {
                self.phase = Phase::Http1Body;
                self.deadline = None;
            }
            Http1Step::Preface { rest_at } => {
                // The first request of an h2c connection: still timed from the start.
                let mut scan = FrameScan::with_preface_left(0);
                let blocks = scan.feed(&bytes[rest_at..]);
                self.phase = Phase::H2(scan);
                self.on_blocks(blocks);
            }
        }
    }

    /// HTTP/2: a header block that opens is timed from the read that opened it (the
    /// first request from the connection's start); one that completes stops the clock.
    fn on_blocks(&mut self, blocks: Blocks) {
        if blocks.open {
            if blocks.completed || self.deadline.is_none() {
                self.deadline = Some(Instant::now() + self.timeouts.header);
            }
        } else if blocks.completed {
            self.deadline = None;
        }
    }

    /// Waits, within the header deadline, for the client's first bytes, and keeps them
    /// for the proxy. Pingora drops a fresh connection whose request it has not read
    /// yet when shutdown begins (a graceful upgrade, SIGTERM); with the bytes already
    /// here it reads the request first and answers it. False: the client closed, sent
    /// nothing in time (counted), or failed.
    pub async fn first_bytes(&mut self) -> bool {
        let deadline = self.deadline.unwrap_or_else(Instant::now);
        match tokio::time::timeout_at(deadline, self.read_ahead()).await {
            Ok(got) => got,
            Err(_) => {
                self.limits.fired(
                    Limit::HeaderReadTimeout,
                    "connection closed: no request within header_read_timeout",
                );
                false
            }
        }
    }

    /// Waits for the client's next bytes and keeps them for the proxy; false: the client
    /// closed or the read failed. The buffer read into lives on the stack of one poll,
    /// not in the future: a connection waiting here (between keep-alive requests, or for
    /// its first) holds no buffer at all.
    pub async fn read_ahead(&mut self) -> bool {
        std::future::poll_fn(|cx| {
            let mut chunk = [MaybeUninit::<u8>::uninit(); 4096];
            let mut buf = ReadBuf::uninit(&mut chunk);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    self.prefetched.extend_from_slice(buf.filled());
                    Poll::Ready(true)
                }
                Poll::Ready(_) => Poll::Ready(false),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Whether bytes read ahead still wait for the proxy.
    pub fn has_read_ahead(&self) -> bool {
        !self.prefetched.is_empty()
    }

    /// Whether the first bytes read (`first_bytes`) may be the h2c preface: they are
    /// HTTP/2 with prior knowledge, or too few to tell yet.
    pub fn may_be_h2c(&self) -> bool {
        matches!(
            self.phase,
            Phase::Http1Header {
                preface: Some(_),
                ..
            }
        ) && {
            let n = self.prefetched.len().min(H2_PREFACE.len());
            self.prefetched[..n] == H2_PREFACE[..n]
        }
    }

    /// Whether the header deadline has passed; if not, wakes the task when it does.
    fn header_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = self.deadline else {
            return false;
        };
        poll_timer(&mut self.header_timer, deadline, cx)
    }

    fn header_timed_out(&self) -> io::Error {
        let detail = match self.phase {
            Phase::H2(_) => {
                "connection closed: HTTP/2 request header block not complete within header_read_timeout"
            }
            _ => "connection closed: request header not complete within header_read_timeout",
        };
        self.limits.fired(Limit::HeaderReadTimeout, detail);
        io::Error::new(
            io::ErrorKind::TimedOut,
            "request header not received within header_read_timeout",
        )
    }

    /// A write that could not proceed: whether the client has now kept it waiting for
    /// `write_timeout` (if not, wakes the task when it will have).
    fn write_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let write = self.timeouts.write;
        let deadline = *self
            .write_deadline
            .get_or_insert_with(|| Instant::now() + write);
        poll_timer(&mut self.write_timer, deadline, cx)
    }

    fn write_timed_out(&mut self) -> io::Error {
        if !self.write_failed {
            self.write_failed = true;
            self.limits.fired(
                Limit::WriteTimeout,
                "connection closed: the client read nothing for write_timeout",
            );
        }
        io::Error::new(
            io::ErrorKind::TimedOut,
            "the client read nothing within write_timeout",
        )
    }

    /// Follows one write-side poll: progress disarms the write clock, a wait arms it.
    fn after_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
        progressed: impl FnOnce(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(Ok(value)) => {
                if progressed(&value) {
                    self.write_deadline = None;
                }
                Poll::Ready(Ok(value))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if self.write_expired(cx) => Poll::Ready(Err(self.write_timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn write_refused(&self) -> Option<io::Error> {
        self.write_failed.then(|| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing within write_timeout",
            )
        })
    }
}

/// One read of an HTTP/1 header: either it is still the h2c preface so far, or header
/// bytes to scan for the blank line.
fn http1_step(scan: &mut HeaderEnd, preface: &mut Option<usize>, bytes: &[u8]) -> Http1Step {
    if let Some(matched) = preface {
        let want = &H2_PREFACE[*matched..];
        let n = want.len().min(bytes.len());
        if bytes[..n] == want[..n] {
            *matched += n;
            if *matched == H2_PREFACE.len() {
                return Http1Step::Preface { rest_at: n };
            }
            // A preface prefix: not scanned (it holds a blank line of its own).
            return Http1Step::Continue;
        }
        // Not the preface after all: what matched so far was header bytes too.
        let seen = *matched;
        *preface = None;
        if scan.feed(&H2_PREFACE[..seen]) {
            return Http1Step::HeaderDone;
        }
    }
    if scan.feed(bytes) {
        Http1Step::HeaderDone
    } else {
        Http1Step::Continue
    }
}

/// Polls `timer` set to `deadline` (created on first use, moved when the deadline moves):
/// true once it has passed.
fn poll_timer(
    timer: &mut Option<Pin<Box<Sleep>>>,
    deadline: Instant,
    cx: &mut Context<'_>,
) -> bool {
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    if timer.deadline() != deadline {
        timer.as_mut().reset(deadline);
    }
    timer.as_mut().poll(cx).is_ready()
}

impl AsyncRead for ClientStream {
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
                // A client that keeps every read busy without finishing a header (an h2
                // PING stream) never lets a read wait: look at the clock here too.
                if this.deadline.is_some_and(|d| Instant::now() >= d) {
                    return Poll::Ready(Err(this.header_timed_out()));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if this.header_expired(cx) => Poll::Ready(Err(this.header_timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.write_refused() {
            return Poll::Ready(Err(e));
        }
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after_write(cx, poll, |&n| n > 0)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.write_refused() {
            return Poll::Ready(Err(e));
        }
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.after_write(cx, poll, |_| true)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.after_write(cx, poll, |_| true)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.write_refused() {
            return Poll::Ready(Err(e));
        }
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(cx, poll, |&n| n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

super::passthrough::delegate_stream_info!(ClientStream, inner);

#[async_trait]
impl Peek for ClientStream {
    /// Reads on (within the header deadline) until the bytes are the whole h2c preface
    /// or cannot be: Pingora compares all 24 bytes, so a shorter answer means HTTP/1.
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let deadline = self.deadline.unwrap_or_else(Instant::now);
        loop {
            let have = self.prefetched.len().min(buf.len());
            if have == buf.len() || !H2_PREFACE.starts_with(&self.prefetched[..have]) {
                break;
            }
            let mut chunk = [0u8; 512];
            match tokio::time::timeout_at(deadline, self.inner.read(&mut chunk)).await {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => self.prefetched.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(self.header_timed_out()),
            }
        }
        let n = buf.len().min(self.prefetched.len());
        buf[..n].copy_from_slice(&self.prefetched[..n]);
        Ok(true)
    }
}
