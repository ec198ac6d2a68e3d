//! Assembles the Pingora server from a config and runs it until SIGTERM/SIGINT (or
//! SIGQUIT hands its listening sockets to a new process).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{ExecutionPhase, RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{SignalKind, signal};

use pingora::apps::HttpServerOptions;
use pingora::listeners::ListenerConfig;
use pingora::listeners::tls::TlsSettings;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::services::listening::Service;

use crate::config::{Config, ListenerSpec};
use crate::drain::InFlight;
use crate::listener::{LimitReporter, ListenerApp};
use crate::proxy::Gateway;
use crate::reload::Reloader;
use crate::runtime::RuntimeHandle;
use crate::upgrade_socket::{self, SocketPathError};

/// After SIGTERM (or an upgrade handover), how long no request must be in flight before
/// the process exits.
const DRAIN_QUIET: Duration = Duration::from_millis(300);

/// Runs the gateway on `config`, reloading it from `source` when given. With `upgrade`,
/// takes the listening sockets from the running process (which hands them over on
/// SIGQUIT) instead of binding them. Returns only if the server fails to start.
pub fn run(config: Config, source: Option<std::path::PathBuf>, upgrade: bool) -> ! {
    // Plugins load (and run `init`) before anything listens: one that cannot start is
    // a config error like any other.
    let runtime = match RuntimeHandle::new(config) {
        Ok(runtime) => Arc::new(runtime),
        Err(e) => {
            eprint!("{e}");
            std::process::exit(2);
        }
    };
    if !runtime.modes.persisted() {
        tracing::info!(
            "no server.state_dir: breaker mode overrides last until the process (and its upgrades) ends"
        );
    }
    let config = Arc::clone(&runtime.snapshot().config);
    let grace = config.server.shutdown_grace_period;
    // Before Pingora binds it (`--upgrade`) or sends to it (SIGQUIT): the directory
    // exists, is ours and private, and nothing but our own socket sits at the path.
    let upgrade_socket = config.server.upgrade_socket.clone();
    let euid = upgrade_socket::effective_uid();
    if let Err(e) = upgrade_socket::prepare(&upgrade_socket, euid) {
        eprintln!("server.upgrade_socket: {e}");
        std::process::exit(2);
    }
    let conf = ServerConf {
        threads: config.server.threads.get(),
        upstream_keepalive_pool_size: config.server.upstream_keepalive_pool_size,
        // Pingora sleeps the whole grace period; the drain watcher below exits earlier
        // as soon as the last in-flight request is done.
        grace_period_seconds: Some(grace.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: config.server.upgrade_socket.display().to_string(),
        // Per-thread runtimes without stealing: +25% requests/s on one core against
        // work stealing, same load (docs/PERFORMANCE.md).
        work_stealing: false,
        ..ServerConf::default()
    };
    let opt = pingora::server::configuration::Opt {
        upgrade,
        ..Default::default()
    };
    let handover = crate::handover::socket_path(&upgrade_socket);
    if upgrade {
        // Before Pingora waits for the sockets: the old process hands its state over
        // first (handover.rs).
        if let Err(e) = crate::handover::receive(&handover, Arc::clone(&runtime)) {
            tracing::error!(target: "gateway::upgrade", socket = %handover.display(), error = %e, "cannot take the previous process's state; breakers start from their defaults");
        }
    }
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let listeners: Vec<String> = config.listeners.iter().map(|l| l.label()).collect();
    let admin_address = config.admin.address.to_string();
    let watch = config.server.watch_config;
    let in_flight = Arc::new(InFlight::default());
    let reloader = source.map(|path| Arc::new(Reloader::new(path, Arc::clone(&runtime))));
    if let Some(reloader) = &reloader {
        if !watch {
            tracing::info!("config file watching is off; reload with SIGHUP or POST /admin/reload");
        } else if let Err(e) = crate::reload::spawn_watcher(Arc::clone(reloader)) {
            tracing::error!(error = %e, "cannot watch the config file; reload with SIGHUP or POST /admin/reload");
        }
        if let Err(e) = crate::reload::spawn_sighup(Arc::clone(reloader)) {
            tracing::error!(error = %e, "cannot handle SIGHUP");
        }
    }

    if let Err(e) = crate::endpoint_refresh::spawn(Arc::clone(&runtime)) {
        tracing::error!(error = %e, "cannot start following DNS; host-name endpoints keep the addresses found at load");
    }

    crate::tls::install_crypto_provider();
    for listener in &config.listeners {
        match listener_service(&server, listener, &runtime, &in_flight) {
            Ok(service) => {
                server.add_service(service);
            }
            Err(e) => {
                eprintln!("cannot set up listener {}: {e}", listener.label());
                std::process::exit(2);
            }
        }
    }
    server.add_service(crate::admin::service(
        Arc::clone(&runtime),
        reloader,
        &config.admin,
    ));
    if let Some(cluster) = config.cluster.clone() {
        server.add_service(pingora::services::background::background_service(
            "fleet link",
            crate::cluster::FleetLink::new(cluster, Arc::clone(&runtime)),
        ));
    }
    server.add_service(pingora::services::background::background_service(
        "health checks",
        crate::upstream::health::HealthChecker::new({
            let runtime = Arc::clone(&runtime);
            Box::new(move || runtime.snapshot().upstreams.values().cloned().collect())
        }),
    ));

    let mut phases = server.watch_execution_phase();
    std::thread::Builder::new()
        .name("drain".into())
        .spawn(move || {
            while let Ok(phase) = phases.blocking_recv() {
                if matches!(phase, ExecutionPhase::ShutdownGracePeriod) {
                    let drained = in_flight.wait_idle(DRAIN_QUIET, grace);
                    crate::handover::flush(Duration::from_secs(1));
                    tracing::info!(
                        drained,
                        left = in_flight.current(),
                        forwarded_outcomes_dropped = crate::handover::dropped(),
                        "shutdown: in-flight requests finished"
                    );
                    std::process::exit(0);
                }
            }
        })
        .unwrap_or_else(|e| panic!("cannot start drain thread: {e}"));

    tracing::info!(
        listeners = ?listeners,
        admin = %admin_address,
        upgrade_socket = %upgrade_socket.display(),
        "gateway starting"
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals {
            upgrade_socket,
            handover,
            euid,
            runtime,
        }),
    });
    std::process::exit(0)
}

/// How long SIGQUIT waits for the new process's socket to appear, as Pingora's own send
/// would (5 retries a second apart).
const UPGRADE_SOCKET_WAIT: Duration = Duration::from_secs(5);

/// Pingora's signals (SIGQUIT upgrade, SIGTERM graceful stop, SIGINT fast stop), except
/// that SIGQUIT hands the listening sockets over only to a socket that passes
/// `upgrade_socket::check_listener`; otherwise the upgrade is refused and this process
/// keeps serving.
struct Signals {
    upgrade_socket: PathBuf,
    handover: PathBuf,
    euid: u32,
    runtime: Arc<RuntimeHandle>,
}

impl Signals {
    async fn upgrade_allowed(&self) -> Result<(), SocketPathError> {
        let deadline = tokio::time::Instant::now() + UPGRADE_SOCKET_WAIT;
        loop {
            match upgrade_socket::check_listener(&self.upgrade_socket, self.euid) {
                Err(SocketPathError::NoListener(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                result => return result,
            }
        }
    }
}

impl Signals {
    /// Before the sockets: the new process takes this one's state (handover.rs). A
    /// failure is logged and the upgrade goes on: the new process then starts fresh.
    async fn hand_state_over(&self) {
        let (socket, runtime) = (self.handover.clone(), Arc::clone(&self.runtime));
        let sent =
            tokio::task::spawn_blocking(move || crate::handover::send(&socket, &runtime)).await;
        match sent {
            Ok(Ok(())) => {
                tracing::info!(target: "gateway::upgrade", "state handed over to the new process")
            }
            Ok(Err(e)) => {
                tracing::error!(target: "gateway::upgrade", error = %e, "state not handed over; the new process starts fresh")
            }
            Err(e) => {
                tracing::error!(target: "gateway::upgrade", error = %e, "state handover panicked")
            }
        }
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (quit, terminate, interrupt) = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        let (Ok(mut quit), Ok(mut terminate), Ok(mut interrupt)) = (quit, terminate, interrupt)
        else {
            eprintln!("cannot install the SIGQUIT, SIGTERM and SIGINT handlers; exiting");
            std::process::exit(1);
        };
        loop {
            tokio::select! {
                _ = quit.recv() => match self.upgrade_allowed().await {
                    Ok(()) => {
                        self.hand_state_over().await;
                        // Still there? Pingora would stop this process even when the
                        // sockets could not be sent.
                        match upgrade_socket::check_listener(&self.upgrade_socket, self.euid) {
                            Ok(()) => return ShutdownSignal::GracefulUpgrade,
                            Err(e) => {
                                crate::handover::abandon();
                                tracing::error!(
                                    target: "gateway::upgrade",
                                    socket = %self.upgrade_socket.display(),
                                    error = %e,
                                    "upgrade refused: the new process went away during the state handover; still serving"
                                );
                            }
                        }
                    }
                    Err(e) => tracing::error!(
                        target: "gateway::upgrade",
                        socket = %self.upgrade_socket.display(),
                        error = %e,
                        "upgrade refused: the listening sockets were not sent; still serving"
                    ),
                },
                _ = terminate.recv() => return ShutdownSignal::GracefulTerminate,
                _ = interrupt.recv() => return ShutdownSignal::FastShutdown,
            }
        }
    }
}

/// One Pingora service per listener, so each has its own connection count, limits and
/// HTTP/2 setting.
fn listener_service(
    server: &Server,
    listener: &ListenerSpec,
    runtime: &Arc<RuntimeHandle>,
    in_flight: &Arc<InFlight>,
) -> pingora::Result<Service<ListenerApp>> {
    let label = listener.label();
    let limits = Arc::new(LimitReporter::new(
        label.clone(),
        runtime.metrics.for_listener(&label),
    ));
    let gateway = Gateway::new(
        Arc::clone(runtime),
        Arc::clone(in_flight),
        listener.address,
        Arc::clone(&limits),
    );
    let mut proxy = pingora::proxy::http_proxy(&server.configuration, gateway);
    let mut options = HttpServerOptions::default();
    options.h2c = listener.http2 && listener.tls.is_none();
    // An h2 connection with no stream in flight is closed after this; with keep-alive
    // off (0s) it gets the header deadline rather than no bound at all.
    options.h2_idle_timeout = Some(listener.limits.keepalive_timeout)
        .filter(|d| !d.is_zero())
        .or(Some(listener.limits.header_read_timeout));
    proxy.server_options = Some(options);
    // TLS listeners are plain TCP to Pingora: the handshake runs in `ListenerApp`,
    // with Pingora's acceptor, under `handshake_timeout` (listener/tls_handshake.rs).
    let tls = match runtime.certificates(&listener.address) {
        Some(store) => {
            let mut tls = TlsSettings::intermediate("", "")?;
            tls.set_cert_resolver(store);
            if listener.http2 {
                tls.enable_h2();
            }
            Some(tls.build())
        }
        None => None,
    };
    let app = ListenerApp::new(listener.address, proxy, tls, Arc::clone(runtime), limits);
    let mut service = Service::new(format!("gateway {label}"), app);
    // No L4 read buffer: Pingora's default is 64 KiB per connection, held for the
    // connection's whole life, idle keep-alive included; the HTTP/1 and h2 codecs read
    // into buffers of their own anyway (docs/PERFORMANCE.md, idle connections). A
    // PROXY-protocol listener keeps a small one: that header is read a few bytes at a
    // time, one system call each without it (larger reads bypass the buffer).
    let read_buffer = if listener.proxy_protocol { 512 } else { 0 };
    let l4_buffer = L4BufferSettings::default().read(read_buffer);
    service.add_listener(ListenerConfig::tcp(label).l4_buffer(l4_buffer));
    Ok(service)
}
