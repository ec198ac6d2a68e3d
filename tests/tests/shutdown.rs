//! SIGTERM: stop accepting, let in-flight requests finish, then exit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway_tests::{Gateway, Reply, Request, one_upstream, start_origin};
use tokio::sync::mpsc;

#[tokio::test]
async fn sigterm_drains_a_slow_in_flight_request() {
    let (received_tx, mut received) = mpsc::unbounded_channel();
    let received_tx = Mutex::new(received_tx);
    let origin = start_origin(Arc::new(move |_: &Request| {
        if let Ok(tx) = received_tx.lock() {
            let _ = tx.send(());
        }
        Reply::text(200, "finished").delayed(Duration::from_millis(1500))
    }))
    .await;
    let mut gw = Gateway::start(&format!(
        "server: {{ shutdown_grace_period: 20s }}\n{}",
        one_upstream(&[origin.addr()], "")
    ))
    .await;

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
