//! Edge gateway: a Pingora reverse proxy with a circuit breaker in front of every upstream.
//!
//! Module map (see docs/ARCHITECTURE.md): `config` turns YAML into checked specs,
//! `runtime` compiles them into the snapshot requests use, `proxy` is the request path,
//! `routing` and `upstream` are what it consults, `admin` is the operator's listener,
//! `server` wires it all into Pingora, `demo` simulates upstreams with fault injection,
//! `outcomes` records finished exchanges and `replay` runs breakers over a recording.

pub mod admin;
pub mod alerts;
pub mod breaker;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod dns;
pub mod drain;
pub mod endpoint_refresh;
pub mod events;
pub mod grpc;
pub mod handover;
pub mod limit;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod operator_modes;
pub mod outcomes;
pub mod plugin;
pub mod proxy;
pub mod reload;
pub mod replay;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod syntax;
pub mod throttled_log;
pub mod tls;
pub mod upgrade_socket;
pub mod upstream;

/// The allocator (mimalloc, declared there) and its per-thread tidying.
pub use gateway_allocator as allocator;
