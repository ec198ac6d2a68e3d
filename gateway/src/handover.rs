//! Graceful upgrade, the state half. Pingora hands the listening sockets to the new
//! process; this hands over what the old one learnt, over a second Unix socket in the
//! same private directory as the upgrade socket:
//!
//! 1. `run --upgrade` listens on `handover.sock` before it waits for the sockets.
//! 2. On SIGQUIT the old process connects, starts forwarding the outcomes of the
//!    requests it still finishes, sends one JSON line with every upstream's breaker,
//!    shadow, endpoint state and the operator overrides, and waits for `ok` (at most
//!    `WAIT`) before it sends the listening sockets: the new process serves its first
//!    request with the old one's state.
//! 3. Until it exits, the old process sends one line per outcome it records; the new
//!    one records them into its own breakers (`Breaker::record_elsewhere`). So the
//!    in-flight requests of the old process count where the traffic now is.
//!
//! Outcomes recorded in the moment between the forwarder's start and the export may
//! count twice; that is the price of not losing any. A forwarding queue that fills
//! (the new process not reading) drops outcomes and says how many at exit.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::breaker::{Outcome, Verdict};
use crate::operator_modes::{Override, Stamp};
use crate::runtime::RuntimeHandle;
use crate::upstream::{Upstream, UpstreamExport};

/// Next to the upgrade socket.
pub const SOCKET_FILE: &str = "handover.sock";
/// How long the old process gives the new one to take the state, all told.
const WAIT: Duration = Duration::from_secs(2);
/// The state line's limit: far above what thousands of upstreams need.
const MAX_STATE_BYTES: u64 = 64 << 20;
/// One forwarded outcome's line.
const MAX_OUTCOME_BYTES: u64 = 4096;
/// Outcomes waiting to be written before new ones are dropped.
const QUEUE: usize = 16_384;
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct State {
    version: u32,
    upstreams: BTreeMap<String, UpstreamExport>,
    overrides: BTreeMap<String, Override>,
    /// The newest operator action per upstream (a fleet's newest-wins rule).
    #[serde(default)]
    actions: BTreeMap<String, Stamp>,
}

/// One outcome the old process recorded after the handover.
#[derive(Debug, Serialize, Deserialize)]
struct Forwarded {
    upstream: String,
    failed: Option<bool>,
    latency: Duration,
    slow: Option<bool>,
}

/// The socket beside `upgrade_socket`.
pub fn socket_path(upgrade_socket: &Path) -> PathBuf {
    upgrade_socket.with_file_name(SOCKET_FILE)
}

struct Forwarder {
    queue: SyncSender<Forwarded>,
    /// Off once the handover failed or the new process stopped reading.
    active: AtomicBool,
    /// Queued and not yet written.
    pending: AtomicU64,
    dropped: AtomicU64,
    /// Opens the writer once the new process has acknowledged the state line (its
    /// drop, on failure, ends the writer).
    gate: Mutex<Option<SyncSender<()>>>,
}

impl Forwarder {
    /// Nothing more is forwarded; what is queued is counted as dropped.
    fn stop(&self) {
        self.active.store(false, Ordering::Release);
        let left = self.pending.swap(0, Ordering::AcqRel);
        self.dropped.fetch_add(left, Ordering::Relaxed);
        self.gate.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

static FORWARDER: OnceLock<Forwarder> = OnceLock::new();

/// Called for every outcome a breaker counted: nothing (one atomic load) until this
/// process has handed its state over.
pub fn forward(upstream: &Upstream, outcome: Outcome) {
    let Some(forwarder) = FORWARDER.get() else {
        return;
    };
    if !forwarder.active.load(Ordering::Acquire) {
        return;
    }
    let line = Forwarded {
        upstream: upstream.name().to_string(),
        failed: match outcome.verdict {
            Verdict::Success => Some(false),
            Verdict::Failure => Some(true),
            Verdict::Ignored => None,
        },
        latency: outcome.latency,
        slow: outcome.slow,
    };
    forwarder.pending.fetch_add(1, Ordering::AcqRel);
    if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
        forwarder.queue.try_send(line)
    {
        forwarder.pending.fetch_sub(1, Ordering::AcqRel);
        forwarder.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// Before the process exits: waits (at most `limit`) until every queued outcome has
/// been written to the new process.
pub fn flush(limit: Duration) {
    let Some(forwarder) = FORWARDER.get() else {
        return;
    };
    let deadline = Instant::now() + limit;
    while forwarder.pending.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// How many forwarded outcomes were dropped (the new process gone or not reading).
pub fn dropped() -> u64 {
    FORWARDER
        .get()
        .map_or(0, |f| f.dropped.load(Ordering::Relaxed))
}

/// The upgrade did not happen after all (the new process went away): stop forwarding.
pub fn abandon() {
    if let Some(forwarder) = FORWARDER.get() {
        forwarder.stop();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("no process listens on `{}` (a new binary without state handover?): {source}", path.display())]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{}` is this process's own listener, not a new process's", .0.display())]
    OwnSocket(PathBuf),
    #[error("handing the state over through `{}` failed: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the new process did not take the state: it answered `{0}`")]
    Refused(String),
    #[error("a handover already ran in this process")]
    Again,
}

/// The old process's side, on SIGQUIT: forward outcomes from now on, send the state,
/// wait for the new process to have applied it; all within `WAIT`, so the new process
/// is still waiting for the sockets afterwards (Pingora gives up after about 5 s).
pub fn send(socket: &Path, runtime: &RuntimeHandle) -> Result<(), HandoverError> {
    let deadline = Instant::now() + WAIT;
    let io = |source| HandoverError::Io {
        path: socket.to_path_buf(),
        source,
    };
    let stream = UnixStream::connect(socket).map_err(|source| HandoverError::Connect {
        path: socket.to_path_buf(),
        source,
    })?;
    // A process that never got a connection on its own listener (it was started by an
    // older binary) must not take its own state.
    let peer = rustix::net::sockopt::socket_peercred(&stream).map_err(|e| io(e.into()))?;
    if peer.pid == rustix::process::getpid() {
        return Err(HandoverError::OwnSocket(socket.to_path_buf()));
    }
    let writer = stream.try_clone().map_err(io)?;
    let forwarder = start_forwarding(writer).ok_or(HandoverError::Again)?;
    let sent = (|| {
        let snapshot = runtime.snapshot();
        let state = State {
            version: VERSION,
            upstreams: snapshot
                .upstreams
                .iter()
                .map(|(name, u)| (name.clone(), u.export()))
                .collect(),
            overrides: runtime.modes.all(),
            actions: runtime.modes.actions(),
        };
        let mut line = serde_json::to_vec(&state).map_err(|e| io(std::io::Error::other(e)))?;
        line.push(b'\n');
        // The forwarder writes on a clone of this stream only once `ok` came back: the
        // state line is the first on the socket.
        let mut stream = &stream;
        for chunk in line.chunks(64 * 1024) {
            stream.set_write_timeout(Some(left(deadline))).map_err(io)?;
            stream.write_all(chunk).map_err(io)?;
        }
        stream.set_read_timeout(Some(left(deadline))).map_err(io)?;
        let mut answer = String::new();
        BufReader::new(stream)
            .take(64)
            .read_line(&mut answer)
            .map_err(io)?;
        match answer.trim() {
            "ok" => Ok(()),
            other => Err(HandoverError::Refused(other.to_string())),
        }
    })();
    let gate = forwarder
        .gate
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    match (&sent, gate) {
        (Ok(()), Some(gate)) => {
            let _ = gate.send(());
        }
        _ => forwarder.stop(),
    }
    sent
}

/// What is left until `deadline`, never zero (a zero timeout means none).
fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

/// Installs the forwarder (once per process) and its writer thread, gated until the
/// state line is acknowledged.
fn start_forwarding(mut stream: UnixStream) -> Option<&'static Forwarder> {
    let (queue, outcomes) = mpsc::sync_channel::<Forwarded>(QUEUE);
    let (gate, opened) = mpsc::sync_channel::<()>(1);
    FORWARDER
        .set(Forwarder {
            queue,
            active: AtomicBool::new(true),
            pending: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            gate: Mutex::new(Some(gate)),
        })
        .ok()?;
    let forwarder = FORWARDER.get()?;
    let spawned = std::thread::Builder::new()
        .name("handover".into())
        .spawn(move || {
            if opened.recv().is_err() {
                return;
            }
            for outcome in outcomes {
                let written = serde_json::to_vec(&outcome).is_ok_and(|mut line| {
                    line.push(b'\n');
                    stream.write_all(&line).is_ok()
                });
                if !written {
                    forwarder.stop();
                    return;
                }
                forwarder.pending.fetch_sub(1, Ordering::AcqRel);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(target: "gateway::upgrade", error = %e, "cannot start the outcome forwarder");
        forwarder.stop();
    }
    Some(forwarder)
}

/// How long `run --upgrade` waits for the old process to connect: Pingora's own wait
/// for the sockets is about 5 s, after which the new process exits anyway.
const ACCEPT_WAIT: Duration = Duration::from_secs(10);

/// The new process's side (`run --upgrade`): listens before Pingora waits for the
/// sockets; takes the first connection's state, then its outcomes until it closes.
pub fn receive(socket: &Path, runtime: Arc<RuntimeHandle>) -> std::io::Result<()> {
    // The directory is private and checked (upgrade_socket::prepare); whatever sits at
    // the path is ours from an earlier run.
    match std::fs::remove_file(socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(socket)?;
    listener.set_nonblocking(true)?;
    let path = socket.to_path_buf();
    std::thread::Builder::new()
        .name("handover".into())
        .spawn(move || {
            let accepted = accept_within(&listener, ACCEPT_WAIT);
            // One connection only; the path is free for the next process at once.
            drop(listener);
            let _ = std::fs::remove_file(&path);
            let result = match accepted {
                Ok(Some(stream)) => take_state(stream, &runtime),
                Ok(None) => {
                    tracing::warn!(target: "gateway::upgrade", "no state was handed over (the previous process is an older binary?); breakers start from their defaults");
                    return;
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::error!(target: "gateway::upgrade", error = %e, "state handover failed; breakers start from their defaults");
            }
        })?;
    Ok(())
}

fn accept_within(listener: &UnixListener, limit: Duration) -> std::io::Result<Option<UnixStream>> {
    let deadline = Instant::now() + limit;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                return Ok(Some(stream));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}

fn take_state(stream: UnixStream, runtime: &RuntimeHandle) -> std::io::Result<()> {
    stream.set_read_timeout(Some(WAIT))?;
    let mut answer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    (&mut reader)
        .take(MAX_STATE_BYTES)
        .read_until(b'\n', &mut line)?;
    let state: State = match serde_json::from_slice(&line) {
        Ok(state) if matches!(&state, State { version, .. } if *version == VERSION) => state,
        Ok(state) => {
            let _ = answer.write_all(format!("version {}\n", state.version).as_bytes());
            return Err(std::io::Error::other(format!(
                "state format version {} (this binary reads {VERSION})",
                state.version
            )));
        }
        Err(e) => {
            let _ = answer.write_all(b"unreadable\n");
            return Err(std::io::Error::other(format!("unreadable state: {e}")));
        }
    };
    adopt(runtime, &state);
    answer.write_all(b"ok\n")?;
    // From here on the old process sends outcomes until it exits; no deadline.
    reader.get_ref().set_read_timeout(None)?;
    let mut forwarded = 0u64;
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_OUTCOME_BYTES)
            .read_until(b'\n', &mut line)?;
        if read == 0 {
            break;
        }
        let Ok(outcome) = serde_json::from_slice::<Forwarded>(&line) else {
            tracing::warn!(target: "gateway::upgrade", "unreadable forwarded outcome; forwarding stopped");
            break;
        };
        record(runtime, outcome);
        forwarded += 1;
    }
    tracing::info!(
        target: "gateway::upgrade",
        forwarded,
        "the previous process has finished; its outcomes are recorded here"
    );
    Ok(())
}

fn adopt(runtime: &RuntimeHandle, state: &State) {
    let snapshot = runtime.snapshot();
    let mut adopted = Vec::new();
    for (name, theirs) in &state.upstreams {
        if let Some(upstream) = snapshot.upstreams.get(name) {
            let dropped = upstream.adopt(theirs);
            if dropped > 0 {
                tracing::info!(target: "gateway::upgrade", upstream = %name, dropped, "window calls that do not fit this config's window dropped");
            }
            adopted.push(name.as_str());
        }
    }
    if let Err(e) = runtime.adopt_overrides(state.overrides.clone(), state.actions.clone()) {
        tracing::error!(target: "gateway::upgrade", error = %e, "cannot keep the handed-over breaker overrides");
    }
    tracing::info!(
        target: "gateway::upgrade",
        upstreams = ?adopted,
        overrides = state.overrides.len(),
        "state handed over by the previous process"
    );
}

fn record(runtime: &RuntimeHandle, line: Forwarded) {
    let snapshot = runtime.snapshot();
    let Some(upstream) = snapshot.upstreams.get(&line.upstream) else {
        return;
    };
    let mut outcome = match line.failed {
        Some(true) => Outcome::failure(line.latency),
        Some(false) => Outcome::success(line.latency),
        None => return,
    };
    outcome.slow = line.slow;
    upstream.breaker.record_elsewhere(outcome);
    if let Some(shadow) = &upstream.shadow {
        shadow.observe(outcome);
    }
}
