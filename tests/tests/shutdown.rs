//! SIGTERM: stop accepting, let in-flight requests finish, then exit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway_tests::{Gateway, Origin, Reply, Request, one_upstream, start_origin};
use tokio::sync::mpsc::{self, UnboundedReceiver};

/// A gateway (20 s grace period) in front of an origin that answers `/slow` after
/// `delay`, saying on the channel when such a request arrives, and anything else at once.
async fn behind_a_slow_origin(delay: Duration) -> (Gateway, Origin, UnboundedReceiver<()>) {
    let (received_tx, received) = mpsc::unbounded_channel();
    let received_tx = Mutex::new(received_tx);
    let origin = start_origin(Arc::new(move |req: &Request| {
        if req.path() != "/slow" {
            return Reply::text(200, "quick");
        }
        if let Ok(tx) = received_tx.lock() {
            let _ = tx.send(());
        }
        Reply::text(200, "finished").delayed(delay)
    }))
    .await;
    let gw = Gateway::start(&format!(
        "server: {{ shutdown_grace_period: 20s }}\n{}",
        one_upstream(&[origin.addr()], "")
    ))
    .await;
    (gw, origin, received)
}

#[tokio::test]
async fn sigterm_drains_a_slow_in_flight_request() {
    let (mut gw, _origin, mut received) = behind_a_slow_origin(Duration::from_millis(1500)).await;

    let mut conn = gw.conn().await;
    let in_flight = tokio::spawn(async move { conn.get("/slow").await });
    received.recv().await.expect("origin saw the request");
    gw.signal("TERM");

    // New connections are refused once the listener closes.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(gw.listen).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "listener still accepting after SIGTERM");

    let response = in_flight
        .await
        .expect("task")
        .expect("in-flight request completes");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "finished");

    // The process leaves as soon as it is idle, well before the 20s grace period.
    let status = gw.wait_exit(Duration::from_secs(10)).await;
    let status = status.unwrap_or_else(|| panic!("gateway did not exit:\n{}", gw.logs()));
    assert!(status.success(), "exit status {status}:\n{}", gw.logs());
}

/// Between two requests an HTTP/1 connection waits in the listener, outside Pingora's
/// request future (docs/PERFORMANCE.md, idle connections); that wait must still end when
/// shutdown begins, not when the process exits or keep-alive runs out.
#[tokio::test]
async fn sigterm_closes_idle_keep_alive_connections_while_requests_finish() {
    let (mut gw, _origin, mut received) = behind_a_slow_origin(Duration::from_secs(3)).await;

    let mut idle = gw.conn().await;
    let first = idle.get("/quick").await.expect("first request");
    assert_eq!(first.status, 200);
    assert_ne!(first.header("connection"), Some("close"), "kept alive");
    let mut busy = gw.conn().await;
    let in_flight = tokio::spawn(async move { busy.get("/slow").await });
    received.recv().await.expect("origin saw the slow request");
    gw.signal("TERM");

    assert!(
        idle.closed_within(Duration::from_secs(2)).await,
        "the idle keep-alive connection stayed open after SIGTERM:\n{}",
        gw.logs()
    );
    assert!(
        !in_flight.is_finished(),
        "closed only once the slow request ended, not when shutdown began"
    );
    let response = in_flight
        .await
        .expect("task")
        .expect("slow request completes");
    assert_eq!(response.text(), "finished");
    let status = gw.wait_exit(Duration::from_secs(10)).await;
    assert!(status.is_some_and(|s| s.success()), "{}", gw.logs());
}
