//! The admin listener: health and readiness, apart from traffic.

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;

use crate::runtime::RuntimeHandle;

pub struct AdminApp {
    runtime: Arc<RuntimeHandle>,
}

/// The admin service, bound to the configured admin address.
pub fn service(runtime: Arc<RuntimeHandle>, address: &str) -> Service<HttpServer<AdminApp>> {
    let mut service = Service::new(
        "admin".to_string(),
        HttpServer::new_app(AdminApp { runtime }),
    );
    service.add_tcp(address);
    service
}

fn json(status: u16, body: serde_json::Value) -> Response<Vec<u8>> {
    let body = body.to_string().into_bytes();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let runtime = self.runtime.snapshot();
        match (req.method.as_str(), req.uri.path()) {
            ("GET", "/health") => json(200, serde_json::json!({ "status": "ok" })),
            ("GET", "/ready") => json(
                200,
                serde_json::json!({ "status": "ready", "generation": runtime.generation }),
            ),
            ("GET", "/admin/config") => json(
                200,
                serde_json::json!({
                    "source": runtime.config.source.display().to_string(),
                    "hash": runtime.config.hash,
                    "generation": runtime.generation,
                    "upstreams": runtime.upstreams.keys().collect::<Vec<_>>(),
                    "routes": runtime.routes.len(),
                }),
            ),
            _ => json(404, serde_json::json!({ "code": "NOT_FOUND" })),
        }
    }
}
