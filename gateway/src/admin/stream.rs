//! `GET /api/v1/events`: Server-Sent Events of everything the event hub publishes.

use std::time::Duration;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use tokio::sync::broadcast::error::RecvError;

use crate::events::EventHub;

const HEARTBEAT: Duration = Duration::from_secs(15);

/// Streams events until the client leaves or the gateway shuts down.
pub async fn serve(session: &mut ServerSession, events: &EventHub, shutdown: &ShutdownWatch) {
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
                Err(RecvError::Lagged(missed)) => format!(": {missed} events missed\n\n"),
                Err(RecvError::Closed) => return,
            },
            _ = tokio::time::sleep(HEARTBEAT) => ": keepalive\n\n".to_string(),
            _ = shutdown.changed() => return,
        };
        if session
            .write_response_body(Bytes::from(chunk), false)
            .await
            .is_err()
        {
            return;
        }
    }
}
