//! Simulated services of a small trading platform: what the demo puts behind the gateway.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::origin::{Handler, Reply, Request};

const SYMBOLS: &[(&str, f64)] = &[
    ("ACME", 182.40),
    ("GLOBEX", 54.15),
    ("INITECH", 12.83),
    ("UMBRELLA", 301.07),
];

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn health(service: &str) -> Reply {
    Reply::json(200, &json!({ "status": "ok", "service": service }))
}

/// Quotes: `GET /quotes`, `GET /quotes/{symbol}`.
pub fn market_data(instance: &'static str) -> Handler {
    Arc::new(move |req: &Request| {
        let quote = |symbol: &str, base: f64| {
            let jitter = (rand::random::<f64>() - 0.5) * base * 0.002;
            let mid = base + jitter;
            json!({ "symbol": symbol, "bid": (mid * 0.9995 * 100.0).round() / 100.0,
                    "ask": (mid * 1.0005 * 100.0).round() / 100.0, "ts": now_ms(), "source": instance })
        };
        match (req.method.as_str(), req.path()) {
            (_, "/health") => health("market-data"),
            ("GET", "/quotes") => Reply::json(
                200,
                &json!(
                    SYMBOLS
                        .iter()
                        .map(|(s, b)| quote(s, *b))
                        .collect::<Vec<_>>()
                ),
            ),
            ("GET", path) => match path.strip_prefix("/quotes/").and_then(|s| {
                SYMBOLS
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(s))
            }) {
                Some((symbol, base)) => Reply::json(200, &quote(symbol, *base)),
                None => Reply::json(404, &json!({ "error": "unknown symbol" })),
            },
            _ => Reply::json(405, &json!({ "error": "method not allowed" })),
        }
    })
}

/// Holdings: `GET /portfolios/{id}`.
pub fn portfolio() -> Handler {
    Arc::new(|req: &Request| match (req.method.as_str(), req.path()) {
        (_, "/health") => health("portfolio"),
        ("GET", path) if path.starts_with("/portfolios/") => {
            let id = &path["/portfolios/".len()..];
            Reply::json(
                200,
                &json!({ "id": id, "cash": 25_000.0,
                "positions": [{ "symbol": "ACME", "quantity": 120 }, { "symbol": "GLOBEX", "quantity": 400 }] }),
            )
        }
        _ => Reply::json(404, &json!({ "error": "not found" })),
    })
}

/// Orders: `POST /orders` accepts, `GET /orders/{id}` reports.
pub fn orders() -> Handler {
    Arc::new(|req: &Request| match (req.method.as_str(), req.path()) {
        (_, "/health") => health("orders"),
        ("POST", "/orders") => Reply::json(
            201,
            &json!({ "order_id": format!("ord-{:08x}", rand::random::<u32>()),
            "status": "accepted", "received_bytes": req.body.len() }),
        ),
        ("GET", path) if path.starts_with("/orders/") => Reply::json(
            200,
            &json!({ "order_id": &path["/orders/".len()..], "status": "filled" }),
        ),
        _ => Reply::json(404, &json!({ "error": "not found" })),
    })
}
