//! The smallest Pingora proxy: one fixed upstream, nothing else. A reference row for
//! the load benchmark, to tell Pingora's own per-request cost from the gateway's.
//! `plain-pingora LISTEN UPSTREAM [h2c]`, e.g. `plain-pingora 127.0.0.1:18104 127.0.0.1:18100`;
//! `h2c` also accepts HTTP/2 with prior knowledge (the idle-connection benchmark).

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

// Link the gateway library so this binary runs on the same allocator (mimalloc).
use gateway as _;

struct Plain(SocketAddr);

#[async_trait]
impl ProxyHttp for Plain {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.0, false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(listen), Some(upstream)) = (
        args.first(),
        args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()),
    ) else {
        eprintln!("usage: plain-pingora LISTEN UPSTREAM");
        std::process::exit(2);
    };
    // The same runtime settings as the gateway: one thread, no work stealing.
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Plain(upstream));
    if args.get(2).is_some_and(|a| a == "h2c")
        && let Some(app) = proxy.app_logic_mut()
    {
        let mut options = pingora::apps::HttpServerOptions::default();
        options.h2c = true;
        app.server_options = Some(options);
    }
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run_forever()
}
