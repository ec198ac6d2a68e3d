//! `gateway demo`: simulated upstreams with fault injection, and the gateway in front of
//! them on the embedded config `config/demo.yaml`.

pub mod http1;
pub mod origin;
pub mod services;

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use origin::{Handler, Origin};

/// The demo config, embedded so that `gateway demo` needs no file.
pub const DEMO_CONFIG: &str = include_str!("../../../config/demo.yaml");

/// The simulated services and the ports demo.yaml expects them on.
fn simulated() -> Vec<(&'static str, u16, Handler)> {
    vec![
        (
            "market-data (a)",
            9101,
            services::market_data("market-data-a"),
        ),
        (
            "market-data (b)",
            9102,
            services::market_data("market-data-b"),
        ),
        ("portfolio", 9201, services::portfolio()),
        ("orders", 9301, services::orders()),
    ]
}

pub fn run() -> ExitCode {
    let config = match crate::config::parse(DEMO_CONFIG, Path::new("<embedded demo config>")) {
        Ok(config) => config,
        Err(e) => {
            eprint!("the embedded demo config is invalid (a bug):\n{e}");
            return ExitCode::FAILURE;
        }
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready_tx.send(Err(format!("cannot start runtime: {e}")));
                return;
            }
        };
        runtime.block_on(async move {
            let mut origins = Vec::new();
            for (name, port, handler) in simulated() {
                match Origin::bind(SocketAddr::from(([127, 0, 0, 1], port)), handler).await {
                    Ok(origin) => origins.push((name, origin)),
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!(
                            "cannot start simulated {name} on 127.0.0.1:{port}: {e}"
                        )));
                        return;
                    }
                }
            }
            let _ = ready_tx.send(Ok(()));
            // Keep the origins alive for the life of the process.
            std::future::pending::<()>().await;
            drop(origins);
        });
    });
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(message)) => {
            eprintln!("demo: {message}");
            return ExitCode::FAILURE;
        }
        Err(_) => {
            eprintln!("demo: simulated upstreams did not start");
            return ExitCode::FAILURE;
        }
    }
    print_banner(&config);
    crate::server::run(config, None, false)
}

fn print_banner(config: &crate::config::Config) {
    let listen = config
        .listeners
        .first()
        .map_or_else(String::new, |l| l.address.to_string());
    let admin = config.admin.address;
    println!(
        r#"
Edge gateway demo
  gateway        http://{listen}
  admin          http://{admin}/health
  upstreams      market-data 127.0.0.1:9101 + 127.0.0.1:9102, portfolio 127.0.0.1:9201, orders 127.0.0.1:9301

Normal traffic:
  curl -s http://{listen}/api/v1/market/quotes/ACME
  curl -s http://{listen}/api/v1/portfolio/portfolios/42
  curl -s -X POST -d '{{"symbol":"ACME","qty":10}}' http://{listen}/api/v1/orders/orders

An incident: portfolio starts failing, its breaker opens after 3 failures
  curl -s -X POST 'http://127.0.0.1:9201/_fault?failure_rate=1'
  # or: curl -s -X POST -d '{{"is_healthy": false, "response_time_ms": 200}}' http://127.0.0.1:9201/_fault
  for i in 1 2 3 4 5; do curl -s -o /dev/null -w '%{{http_code}} ' http://{listen}/api/v1/portfolio/portfolios/42; done; echo
  curl -si http://{listen}/api/v1/portfolio/portfolios/42     # 503 CIRCUIT_BREAKER_OPEN, Retry-After
Recovery: heal it; after 10s two probes go through and the breaker closes
  curl -s -X DELETE http://127.0.0.1:9201/_fault

A market-data instance dies: retried on the other one, then ejected; clients see no error
  curl -s -X POST 'http://127.0.0.1:9101/_fault?down_for=60s'
  for i in $(seq 10); do curl -s -o /dev/null -w '%{{http_code}} ' http://{listen}/api/v1/market/quotes; done; echo
Both die: the breaker opens and clients get the stale-quotes fallback
  curl -s -X POST 'http://127.0.0.1:9102/_fault?down_for=60s'

Watch it:
  curl -N http://{admin}/api/v1/events                          # live transitions, ejections
  curl -s http://{admin}/api/v1/breakers/portfolio              # state, window, why it tripped
  curl -s http://{admin}/health/upstreams
  curl -s http://{admin}/metrics | grep gateway_breaker_state
Operate it:
  curl -s -X PUT -H 'content-type: application/json' -d '{{"state":"forced_open"}}' http://{admin}/api/v1/breakers/orders/state
  curl -s -X POST -H 'content-type: application/json' http://{admin}/api/v1/breakers/orders/reset
  (state changes need the JSON content type, even without a body)

Other faults on any simulated upstream: latency=3s, reset_rate=0.5, status=429, DELETE to clear.
Breaker transitions, ejections and health changes are also logged on stderr.
"#
    );
}
