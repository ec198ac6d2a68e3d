//! One request's deadlines that no single read or write of it enforces, watched around
//! the whole request: the HTTP/2 request body (Pingora applies no read timeout to h2
//! streams) and the backstop of a route's total `request_timeout`.
//!
//! `Requests` is Pingora's HTTP proxy with this watch around each request, HTTP/1 and
//! every HTTP/2 stream alike. The proxy arms it (`watch_request`) once the route is
//! known and reports body progress (`body_progress`). When a deadline passes, the
//! request is dropped where it stands: an HTTP/1 connection is closed, an HTTP/2 stream
//! reset, the upstream call abandoned (its breaker permit and bulkhead slot given back).
//! The answers a client can read (408, 504) come first from Pingora's own timeouts, which
//! the proxy sets to the time left (`proxy/deadline.rs`); the watch catches what they
//! cannot: h2 bodies, and waits whose per-read timeout restarts on every byte (an
//! upstream or a client trickling).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::protocols::http::ServerSession;
use pingora::protocols::http::v2::server::H2Options;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::time::{Instant, Sleep};

use super::{Limit, LimitReporter};
use crate::proxy::Gateway;

/// How long after its `request_timeout` a request still running is dropped: time for
/// the proxy's own timeouts, set to end at the deadline, to answer first.
pub const REQUEST_TIMEOUT_GRACE: Duration = Duration::from_secs(1);

tokio::task_local! {
    static WATCH: Arc<RequestWatch>;
}

/// Arms the watch of the request served on this task: its total deadline, and (HTTP/2)
/// the longest wait for request body bytes. Outside a watched request it does nothing.
pub fn watch_request(deadline: Option<std::time::Instant>, h2_body: Option<Duration>) {
    let _ = WATCH.try_with(|watch| watch.arm(deadline.map(Instant::from_std), h2_body));
}

/// Request body bytes arrived (`done`: all of it) for the request served on this task.
pub fn body_progress(done: bool) {
    let _ = WATCH.try_with(|watch| watch.progress(done));
}

/// Armed and moved only from inside the request it watches, which runs on the task that
/// polls `overdue` right after it (`process_new_http`'s `select!`): the watcher always
/// sees the current deadlines without being notified, so no wake-up is ever needed
/// beyond its own timer.
#[derive(Debug, Default)]
struct RequestWatch {
    state: Mutex<Watched>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Watched {
    /// The route's `request_timeout` ends here.
    request_deadline: Option<Instant>,
    /// HTTP/2 body still expected: the next bytes are due by `due`.
    body: Option<BodyClock>,
}

#[derive(Debug, Clone, Copy)]
struct BodyClock {
    timeout: Duration,
    due: Instant,
}

impl Watched {
    /// The first deadline to pass, and which limit it is.
    fn next(&self) -> Option<(Instant, Limit)> {
        let request = self
            .request_deadline
            .map(|d| (d + REQUEST_TIMEOUT_GRACE, Limit::RequestTimeout));
        let body = self.body.map(|b| (b.due, Limit::BodyReadTimeout));
        [request, body]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }
}

impl RequestWatch {
    fn lock(&self) -> MutexGuard<'_, Watched> {
        // Two plain values: a panic elsewhere cannot leave them half-written.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn arm(&self, deadline: Option<Instant>, h2_body: Option<Duration>) {
        // Nothing to watch (most requests: HTTP/1 without a route request_timeout).
        if deadline.is_none() && h2_body.is_none() {
            return;
        }
        let mut state = self.lock();
        state.request_deadline = deadline;
        state.body = h2_body.map(|timeout| BodyClock {
            timeout,
            due: Instant::now() + timeout,
        });
    }

    fn progress(&self, done: bool) {
        let mut state = self.lock();
        if done {
            state.body = None;
        } else if let Some(body) = state.body.as_mut() {
            body.due = Instant::now() + body.timeout;
        }
    }

    /// Resolves with the limit once a deadline has passed. Polled after every poll of
    /// the request (see the type's comment); between polls only its timer wakes it.
    async fn overdue(&self) -> Limit {
        let mut timer: Option<Pin<Box<Sleep>>> = None;
        std::future::poll_fn(|cx| {
            let Some((at, limit)) = self.lock().next() else {
                return Poll::Pending;
            };
            let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            if timer.deadline() != at {
                // Body progress moved the deadline since the last poll.
                timer.as_mut().reset(at);
            }
            match timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(limit),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

/// Pingora's HTTP proxy, each request under a `RequestWatch`.
pub struct Requests {
    proxy: Arc<HttpProxy<Gateway>>,
    limits: Arc<LimitReporter>,
}

impl Requests {
    pub fn new(proxy: HttpProxy<Gateway>, limits: Arc<LimitReporter>) -> Self {
        Self {
            proxy: Arc::new(proxy),
            limits,
        }
    }
}

#[async_trait]
impl HttpServerApp for Requests {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let watch = Arc::new(RequestWatch::default());
        let request = WATCH.scope(
            Arc::clone(&watch),
            self.proxy.process_new_http(session, shutdown),
        );
        tokio::select! {
            biased;
            served = request => served,
            limit = watch.overdue() => {
                let detail = match limit {
                    Limit::BodyReadTimeout => {
                        "HTTP/2 stream reset: no request body bytes within body_read_timeout"
                    }
                    _ => "request dropped: still running 1s past its route's request_timeout",
                };
                self.limits.fired(limit, detail);
                None
            }
        }
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.proxy.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.proxy.server_options()
    }

    async fn http_cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}
