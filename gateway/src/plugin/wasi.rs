//! WASI for plugins whose calls run synchronously on the proxy's own threads: every
//! interface wasmtime-wasi offers, except that nothing may wait. An operation that
//! would block (a sleep, a poll on something not ready, a blocking read of an empty
//! stream) traps at once instead of stalling the thread that serves other requests;
//! anything that completes right away (a line to stdout, a clock, a pollable already
//! ready) works as usual.
//!
//! Why not wasmtime-wasi's own synchronous linker: it blocks on the Tokio runtime for
//! those operations, which panics inside a runtime worker. With no directory preopened
//! and no network granted (`host.rs`), the filesystem and socket operations that could
//! block cannot be reached: a plugin never gets a descriptor or a socket to call them
//! on. `create-udp-socket` is the one such operation a plugin can call; it is answered
//! here without waiting (`access-denied`).

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::io::{poll as async_poll, streams as async_streams};
use wasmtime_wasi::p2::bindings::sockets::{network, udp_create_socket as async_udp_create_socket};
use wasmtime_wasi::p2::bindings::sync::io::poll::{self, Pollable};
use wasmtime_wasi::p2::bindings::sync::io::streams::{self, InputStream, OutputStream};
use wasmtime_wasi::p2::bindings::sync::sockets::udp_create_socket::{self, IpAddressFamily};
use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random, sockets, sync};
use wasmtime_wasi::p2::{SocketError, SocketResult, StreamError, StreamResult, UdpSocket};
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi::sockets::{WasiSockets, WasiSocketsCtxView, WasiSocketsView};

use super::host::HostState;

/// Links every WASI 0.2 interface, none of which waits.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    type S = HostState;
    let l = linker;
    clocks::wall_clock::add_to_linker::<S, WasiClocks>(l, S::clocks)?;
    clocks::monotonic_clock::add_to_linker::<S, WasiClocks>(l, S::clocks)?;
    random::random::add_to_linker::<S, WasiRandom>(l, |s| s.ctx().ctx.random())?;
    random::insecure::add_to_linker::<S, WasiRandom>(l, |s| s.ctx().ctx.random())?;
    random::insecure_seed::add_to_linker::<S, WasiRandom>(l, |s| s.ctx().ctx.random())?;
    cli::exit::add_to_linker::<S, WasiCli>(l, S::cli)?;
    cli::environment::add_to_linker::<S, WasiCli>(l, S::cli)?;
    cli::stdin::add_to_linker::<S, WasiCli>(l, S::cli)?;
    cli::stdout::add_to_linker::<S, WasiCli>(l, S::cli)?;
    cli::stderr::add_to_linker::<S, WasiCli>(l, S::cli)?;
    cli::terminal_input::add_to_linker::<S, WasiCli>(l, S::cli)?;
    cli::terminal_output::add_to_linker::<S, WasiCli>(l, S::cli)?;
    cli::terminal_stdin::add_to_linker::<S, WasiCli>(l, S::cli)?;
    cli::terminal_stdout::add_to_linker::<S, WasiCli>(l, S::cli)?;
    cli::terminal_stderr::add_to_linker::<S, WasiCli>(l, S::cli)?;
    filesystem::preopens::add_to_linker::<S, WasiFilesystem>(l, S::filesystem)?;
    sync::filesystem::types::add_to_linker::<S, WasiFilesystem>(l, S::filesystem)?;
    sockets::tcp_create_socket::add_to_linker::<S, WasiSockets>(l, S::sockets)?;
    sockets::instance_network::add_to_linker::<S, WasiSockets>(l, S::sockets)?;
    sockets::network::add_to_linker::<S, WasiSockets>(l, &Default::default(), S::sockets)?;
    sockets::ip_name_lookup::add_to_linker::<S, WasiSockets>(l, S::sockets)?;
    sync::sockets::tcp::add_to_linker::<S, WasiSockets>(l, S::sockets)?;
    sync::sockets::udp::add_to_linker::<S, WasiSockets>(l, S::sockets)?;
    sync::sockets::udp_create_socket::add_to_linker::<S, NoWaitSockets>(l, |s| {
        NoWait(s.sockets())
    })?;
    sync::io::error::add_to_linker::<S, Table>(l, |s| s.ctx().table)?;
    sync::io::poll::add_to_linker::<S, NoWaitIo>(l, |s| NoWait(s.ctx().table))?;
    sync::io::streams::add_to_linker::<S, NoWaitIo>(l, |s| NoWait(s.ctx().table))?;
    Ok(())
}

/// Why a plugin call trapped: it asked to wait.
#[derive(Debug, thiserror::Error)]
#[error("tried to wait ({0}): plugins run on the proxy's threads and may not block")]
struct WouldBlock(&'static str);

/// The value of `operation` if it completes without waiting.
fn at_once<T>(what: &'static str, operation: impl Future<Output = T>) -> Result<T, WouldBlock> {
    match pin!(operation).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => Ok(value),
        Poll::Pending => Err(WouldBlock(what)),
    }
}

/// A stream operation's result if it completes without waiting, else a trap.
fn stream_at_once<T>(
    what: &'static str,
    operation: impl Future<Output = StreamResult<T>>,
) -> StreamResult<T> {
    at_once(what, operation).unwrap_or_else(|e| Err(StreamError::Trap(wasmtime::Error::new(e))))
}

/// wasmtime-wasi's implementations, asked not to wait.
struct NoWait<T>(T);

struct Table;
impl HasData for Table {
    type Data<'a> = &'a mut ResourceTable;
}

struct NoWaitIo;
impl HasData for NoWaitIo {
    type Data<'a> = NoWait<&'a mut ResourceTable>;
}

struct NoWaitSockets;
impl HasData for NoWaitSockets {
    type Data<'a> = NoWait<WasiSocketsCtxView<'a>>;
}

impl poll::Host for NoWait<&mut ResourceTable> {
    fn poll(&mut self, pollables: Vec<Resource<Pollable>>) -> wasmtime::Result<Vec<u32>> {
        at_once("poll", async_poll::Host::poll(self.0, pollables))?
    }
}

impl poll::HostPollable for NoWait<&mut ResourceTable> {
    fn ready(&mut self, pollable: Resource<Pollable>) -> wasmtime::Result<bool> {
        at_once("ready", async_poll::HostPollable::ready(self.0, pollable))?
    }

    fn block(&mut self, pollable: Resource<Pollable>) -> wasmtime::Result<()> {
        at_once("block", async_poll::HostPollable::block(self.0, pollable))?
    }

    fn drop(&mut self, pollable: Resource<Pollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(self.0, pollable)
    }
}

impl streams::Host for NoWait<&mut ResourceTable> {
    fn convert_stream_error(&mut self, e: StreamError) -> wasmtime::Result<streams::StreamError> {
        streams::Host::convert_stream_error(self.0, e)
    }
}

impl streams::HostInputStream for NoWait<&mut ResourceTable> {
    fn drop(&mut self, stream: Resource<InputStream>) -> wasmtime::Result<()> {
        // Already out of the table; a stream that wanted to finish something is dropped.
        at_once("drop", async_streams::HostInputStream::drop(self.0, stream)).unwrap_or(Ok(()))
    }

    fn read(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        streams::HostInputStream::read(self.0, stream, len)
    }

    fn blocking_read(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        let read = async_streams::HostInputStream::blocking_read(self.0, stream, len);
        stream_at_once("blocking-read", read)
    }

    fn skip(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        streams::HostInputStream::skip(self.0, stream, len)
    }

    fn blocking_skip(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        let skip = async_streams::HostInputStream::blocking_skip(self.0, stream, len);
        stream_at_once("blocking-skip", skip)
    }

    fn subscribe(&mut self, stream: Resource<InputStream>) -> wasmtime::Result<Resource<Pollable>> {
        streams::HostInputStream::subscribe(self.0, stream)
    }
}

impl streams::HostOutputStream for NoWait<&mut ResourceTable> {
    fn drop(&mut self, stream: Resource<OutputStream>) -> wasmtime::Result<()> {
        at_once(
            "drop",
            async_streams::HostOutputStream::drop(self.0, stream),
        )
        .unwrap_or(Ok(()))
    }

    fn check_write(&mut self, stream: Resource<OutputStream>) -> StreamResult<u64> {
        streams::HostOutputStream::check_write(self.0, stream)
    }

    fn write(&mut self, stream: Resource<OutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        streams::HostOutputStream::write(self.0, stream, bytes)
    }

    fn blocking_write_and_flush(
        &mut self,
        stream: Resource<OutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        let write =
            async_streams::HostOutputStream::blocking_write_and_flush(self.0, stream, bytes);
        stream_at_once("blocking-write-and-flush", write)
    }

    fn blocking_write_zeroes_and_flush(
        &mut self,
        stream: Resource<OutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        let write =
            async_streams::HostOutputStream::blocking_write_zeroes_and_flush(self.0, stream, len);
        stream_at_once("blocking-write-zeroes-and-flush", write)
    }

    fn subscribe(
        &mut self,
        stream: Resource<OutputStream>,
    ) -> wasmtime::Result<Resource<Pollable>> {
        streams::HostOutputStream::subscribe(self.0, stream)
    }

    fn write_zeroes(&mut self, stream: Resource<OutputStream>, len: u64) -> StreamResult<()> {
        streams::HostOutputStream::write_zeroes(self.0, stream, len)
    }

    fn flush(&mut self, stream: Resource<OutputStream>) -> StreamResult<()> {
        streams::HostOutputStream::flush(self.0, stream)
    }

    fn blocking_flush(&mut self, stream: Resource<OutputStream>) -> StreamResult<()> {
        let flush = async_streams::HostOutputStream::blocking_flush(self.0, stream);
        stream_at_once("blocking-flush", flush)
    }

    fn splice(
        &mut self,
        dst: Resource<OutputStream>,
        src: Resource<InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        streams::HostOutputStream::splice(self.0, dst, src, len)
    }

    fn blocking_splice(
        &mut self,
        dst: Resource<OutputStream>,
        src: Resource<InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        let splice = async_streams::HostOutputStream::blocking_splice(self.0, dst, src, len);
        stream_at_once("blocking-splice", splice)
    }
}

impl udp_create_socket::Host for NoWait<WasiSocketsCtxView<'_>> {
    fn create_udp_socket(&mut self, family: IpAddressFamily) -> SocketResult<Resource<UdpSocket>> {
        let create = async_udp_create_socket::Host::create_udp_socket(&mut self.0, family);
        at_once("create-udp-socket", create).unwrap_or_else(|e| Err(SocketError::trap(e)))
    }
}

impl network::Host for NoWait<WasiSocketsCtxView<'_>> {
    fn convert_error_code(&mut self, e: SocketError) -> wasmtime::Result<network::ErrorCode> {
        self.0.convert_error_code(e)
    }

    fn network_error_code(
        &mut self,
        e: Resource<network::Error>,
    ) -> wasmtime::Result<Option<network::ErrorCode>> {
        self.0.network_error_code(e)
    }
}

impl network::HostNetwork for NoWait<WasiSocketsCtxView<'_>> {
    fn drop(&mut self, network: Resource<network::Network>) -> wasmtime::Result<()> {
        network::HostNetwork::drop(&mut self.0, network)
    }
}
