//! `GET /api/v1/events`: Server-Sent Events of everything the event hub publishes; and
//! the bound on live subscribers it shares with the WebSocket stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use tokio::sync::broadcast::error::RecvError;

use crate::events::EventHub;

const HEARTBEAT: Duration = Duration::from_secs(15);
/// A subscriber whose socket takes no bytes for this long does not keep up: while a
/// write waits it reads no events either, so it could not even see that it fell behind.
pub const WRITE_LIMIT: Duration = Duration::from_secs(5);

/// Most live event subscribers (SSE and WebSocket together): each holds a task and a
/// place in the broadcast; more are refused with 503.
pub const MAX_SUBSCRIBERS: usize = 64;

/// Counts live subscribers, within `MAX_SUBSCRIBERS`.
#[derive(Debug)]
pub struct Subscribers {
    live: AtomicUsize,
    gauge: prometheus::IntGauge,
    dropped_slow: prometheus::IntCounter,
    refused: prometheus::IntCounter,
}

/// One live subscriber's place; given back on drop.
#[derive(Debug)]
pub struct Subscription(Arc<Subscribers>);

impl Subscribers {
    pub fn new(metrics: &crate::metrics::Metrics) -> Self {
        let (gauge, dropped_slow, refused) = metrics.event_subscribers();
        Self {
            live: AtomicUsize::new(0),
            gauge,
            dropped_slow,
            refused,
        }
    }

    /// A place for one more subscriber, or None (counted) when all are taken.
    pub fn join(self: &Arc<Self>) -> Option<Subscription> {
        let taken = self.live.fetch_add(1, Ordering::AcqRel);
        if taken >= MAX_SUBSCRIBERS {
            self.live.fetch_sub(1, Ordering::AcqRel);
            self.refused.inc();
            return None;
        }
        self.gauge.set(i64::try_from(taken + 1).unwrap_or(i64::MAX));
        Some(Subscription(Arc::clone(self)))
    }
}

impl Subscription {
    /// The subscriber fell behind (by `missed` events, or a write waited past
    /// `WRITE_LIMIT`) and is dropped: a slow client must not hold a place for ever.
    pub fn dropped_slow(&self, missed: u64) {
        self.0.dropped_slow.inc();
        tracing::warn!(target: "gateway::admin", missed, "event subscriber too slow: dropped");
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let left = self.0.live.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        self.0.gauge.set(i64::try_from(left).unwrap_or(i64::MAX));
    }
}

/// Streams events until the client leaves, falls behind (dropped, counted) or the
/// gateway shuts down.
pub async fn serve(
    session: &mut ServerSession,
    events: &EventHub,
    subscription: Subscription,
    shutdown: &ShutdownWatch,
) {
    // Subscribe before answering, so nothing published after the client sees the
    // stream open is missed.
    let mut feed = events.subscribe();
    let Ok(mut header) = ResponseHeader::build(200, Some(4)) else {
        return;
    };
    let headers = [
        ("content-type", "text/event-stream"),
        ("cache-control", "no-store"),
        ("transfer-encoding", "chunked"),
    ];
    if headers
        .iter()
        .any(|(n, v)| header.insert_header(*n, *v).is_err())
    {
        return;
    }
    session.set_keepalive(None);
    if session
        .write_response_header(Box::new(header))
        .await
        .is_err()
        || session
            .write_response_body(Bytes::from_static(b": connected\n\n"), false)
            .await
            .is_err()
    {
        return;
    }
    let mut shutdown = shutdown.clone();
    loop {
        let chunk = tokio::select! {
            event = feed.recv() => match event {
                Ok(event) => {
                    let kind = event.get("type").and_then(|t| t.as_str()).unwrap_or("event");
                    format!("event: {kind}\ndata: {event}\n\n")
                }
                Err(RecvError::Lagged(missed)) => {
                    subscription.dropped_slow(missed);
                    let farewell = format!(": dropped: {missed} events missed; reconnect\n\n");
                    let _ = session.write_response_body(Bytes::from(farewell), true).await;
                    return;
                }
                Err(RecvError::Closed) => return,
            },
            _ = tokio::time::sleep(HEARTBEAT) => ": keepalive\n\n".to_string(),
            _ = shutdown.changed() => return,
        };
        match tokio::time::timeout(
            WRITE_LIMIT,
            session.write_response_body(Bytes::from(chunk), false),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                subscription.dropped_slow(0);
                return;
            }
        }
    }
}
