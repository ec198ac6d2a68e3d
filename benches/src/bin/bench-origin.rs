//! A loopback origin with fault injection for the load scripts:
//! `bench-origin PORT [NAME]`, faults over HTTP on the same port (`POST /_fault?...`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use gateway::demo::origin::{Origin, Reply, Request};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(port) = args.next().and_then(|p| p.parse::<u16>().ok()) else {
        eprintln!("usage: bench-origin PORT [NAME]");
        return ExitCode::from(2);
    };
    let name: &'static str = Box::leak(
        args.next()
            .unwrap_or_else(|| "origin".into())
            .into_boxed_str(),
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench-origin: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let handler = Arc::new(move |_: &Request| Reply::text(200, name));
        match Origin::bind(SocketAddr::from(([127, 0, 0, 1], port)), handler).await {
            Ok(_origin) => {
                println!("ready {port}");
                std::future::pending::<()>().await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("bench-origin: cannot listen on 127.0.0.1:{port}: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
