//! The only `bindgen!`: host-side bindings for the WIT package in `wit/`. The
//! fallback world reuses the predicate world's `types` and `host` so that both
//! share one set of Rust types and one `host` implementation.

pub mod predicate {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "failure-predicate",
    });
}

pub mod fallback {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "fallback",
        with: {
            "edge-gateway:plugin/types": super::predicate::edge_gateway::plugin::types,
            "edge-gateway:plugin/host": super::predicate::edge_gateway::plugin::host,
        },
    });
}

pub use predicate::edge_gateway::plugin::host;
pub use predicate::edge_gateway::plugin::types;
