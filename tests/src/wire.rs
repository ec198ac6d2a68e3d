//! Upstream sockets that misbehave below HTTP, for the transport errors a scripted
//! origin cannot produce: a connect that never completes, a peer that never reads, a
//! peer that answers with bytes that are no HTTP (or no TLS).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// A loopback port whose accept queue is full: a connect to it is never answered (the
/// kernel drops the SYN), so the gateway's connect times out. Keep it alive while used.
pub struct Unanswered {
    pub addr: SocketAddr,
    _listener: TcpListener,
    _queued: Vec<std::net::TcpStream>,
}

impl Unanswered {
    pub fn start() -> Unanswered {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind");
        // A backlog of 0 leaves room for one queued connection; fill it (and try a
        // second, which times out) so that no further handshake completes.
        let listener = socket.listen(0).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let queued = (0..2)
            .filter_map(|_| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
            })
            .collect();
        Unanswered {
            addr,
            _listener: listener,
            _queued: queued,
        }
    }
}

/// Accepts connections and never reads from them, with a small receive buffer: a
/// request body written to it stops moving, so the gateway's write times out.
pub async fn never_reads() -> SocketAddr {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("recv buffer");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind");
    let listener = socket.listen(16).expect("listen");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// Reads whatever a connection sends first, writes `answer`, and closes it. With
/// bytes that are no HTTP response the gateway sees a malformed response; with any
/// bytes at all, a TLS client sees a failed handshake.
pub async fn answers_with(answer: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer_once(stream, answer));
        }
    });
    addr
}

async fn answer_once(mut stream: TcpStream, answer: &'static [u8]) {
    let mut first = [0u8; 4096];
    let _ = stream.read(&mut first).await;
    let _ = stream.write_all(answer).await;
    let _ = stream.shutdown().await;
}
