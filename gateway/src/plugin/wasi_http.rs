//! `wasi:http` for plugins: linked because toolchains import it by default
//! (ComponentizeJS's `fetch`), so that such components load; no request ever leaves.
//!
//! `wasi:http/types` is wasmtime-wasi-http's own implementation: building requests,
//! headers and bodies happens in the plugin's resource table and completes at once
//! (none of its functions waits; its streams and pollables are `wasi:io`'s, linked
//! without waiting by `wasi.rs`). `wasi:http/outgoing-handler.handle` is answered here,
//! at once, with `HTTP-request-denied`: wasmtime-wasi-http's would hand the request to
//! a task and leave the plugin to poll for the answer, which would wait (a trap), or
//! send it out. A plugin sees the error where it makes the call (JavaScript's `fetch`
//! rejects) and can carry on.

use wasmtime::StoreContextMut;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi_http::p2::bindings::http::types::{self, ErrorCode};
use wasmtime_wasi_http::p2::types::{HostFutureIncomingResponse, HostOutgoingRequest};
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks};

use super::host::HostState;

/// The interface as wasmtime-wasi-http's `types` is versioned; a plugin importing any
/// other 0.2.x version links to it (wasmtime matches semver-compatible versions).
const OUTGOING_HANDLER: &str = "wasi:http/outgoing-handler@0.2.12";

/// Links `wasi:http/types` and an `outgoing-handler` that denies every request.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let options = wasmtime_wasi_http::p2::bindings::LinkOptions::default();
    types::add_to_linker::<HostState, Http>(linker, &options.into(), HostState::http)?;
    // By hand rather than through the generated `outgoing_handler::Host`, whose
    // supertrait is all of `types`: one function to answer, on the same resource types.
    linker
        .instance(OUTGOING_HANDLER)?
        .func_wrap("handle", deny)?;
    Ok(())
}

/// The `wasi:http` state of one instance: wasmtime-wasi-http's context and hooks that
/// send nothing.
pub struct HttpState {
    ctx: WasiHttpCtx,
    hooks: NoNetwork,
}

/// What one `fields` (a header set) and one buffered body chunk may hold in host
/// memory: with `host::MAX_RESOURCES` live resources an instance holds at most a few
/// MiB of `wasi:http` state outside its own `limits.memory`.
const FIELD_SIZE_LIMIT: usize = 16 * 1024;
const BODY_CHUNK: usize = 16 * 1024;

impl Default for HttpState {
    fn default() -> Self {
        let mut ctx = WasiHttpCtx::new();
        ctx.set_field_size_limit(FIELD_SIZE_LIMIT);
        Self {
            ctx,
            hooks: NoNetwork,
        }
    }
}

impl HttpState {
    /// The view wasmtime-wasi-http's `types` implementation works on, sharing the
    /// instance's resource table with WASI (bodies are `wasi:io` streams).
    pub fn view<'a>(&'a mut self, table: &'a mut ResourceTable) -> WasiHttpCtxView<'a> {
        WasiHttpCtxView {
            hooks: &mut self.hooks,
            table,
            ctx: &mut self.ctx,
        }
    }
}

struct Http;
impl HasData for Http {
    type Data<'a> = WasiHttpCtxView<'a>;
}

/// `outgoing-handler.handle`: denied, at once. The request and its options are the
/// plugin's to give away: dropped here, so that a plugin calling in a loop does not fill
/// its table.
fn deny(
    mut store: StoreContextMut<'_, HostState>,
    (request, options): (
        Resource<HostOutgoingRequest>,
        Option<Resource<RequestOptions>>,
    ),
) -> wasmtime::Result<(Result<Resource<HostFutureIncomingResponse>, ErrorCode>,)> {
    let table = store.data_mut().resource_table();
    table.delete(request)?;
    if let Some(options) = options {
        table.delete(options)?;
    }
    Ok((Err(ErrorCode::HttpRequestDenied),))
}

/// Hooks for wasmtime-wasi-http with no way out: `send_request` is only reached through
/// its own `outgoing-handler`, which is not linked; it would deny all the same.
#[derive(Default)]
struct NoNetwork;

/// What `send_request` returns: the response, and a future for the rest of the exchange
/// (`Rest`).
type Sent = Box<
    dyn Future<Output = Result<(http::Response<WasiBody>, Box<Rest>), wasmtime_wasi_http::Error>>
        + Send,
>;
type Rest = dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send;

impl WasiHttpHooks for NoNetwork {
    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        1
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        BODY_CHUNK
    }

    fn send_request(
        &mut self,
        _request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<Rest>,
    ) -> Sent {
        Box::new(std::future::ready(Err(
            wasmtime_wasi_http::Error::HttpRequestDenied,
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use wasmtime::{AsContextMut, Engine, Store};
    use wasmtime_wasi_http::FieldMap;

    use super::*;
    use crate::plugin::log::PluginLog;

    #[test]
    fn an_outgoing_request_is_denied_at_once_and_dropped_with_its_options() {
        let dropped = prometheus::IntCounter::new("dropped", "test").expect("counter");
        let log = Arc::new(PluginLog::new("test".into(), 100, 64 << 10, dropped));
        let mut store = Store::new(&Engine::default(), HostState::new(log, 1 << 20));
        let table = store.data_mut().resource_table();
        let request = table
            .push(HostOutgoingRequest {
                method: types::Method::Get,
                scheme: Some(types::Scheme::Http),
                authority: Some("127.0.0.1:9".into()),
                path_with_query: Some("/".into()),
                headers: FieldMap::default(),
                body: None,
            })
            .expect("push request");
        let options = table.push(RequestOptions::default()).expect("push options");
        let (request_rep, options_rep) = (request.rep(), options.rep());

        let (answer,) = deny(store.as_context_mut(), (request, Some(options))).expect("no trap");
        assert!(
            matches!(answer, Err(ErrorCode::HttpRequestDenied)),
            "{answer:?}"
        );
        let table = store.data_mut().resource_table();
        let request = Resource::<HostOutgoingRequest>::new_borrow(request_rep);
        let options = Resource::<RequestOptions>::new_borrow(options_rep);
        assert!(table.get(&request).is_err(), "the request is dropped");
        assert!(table.get(&options).is_err(), "its options are dropped");
    }
}
