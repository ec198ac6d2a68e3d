//! The breaker: admission, outcome recording, transitions.
//!
//! Hot path: in closed state `try_acquire` is one atomic load and `Permit::record`
//! touches atomics only (window counters, the consecutive-failure count). The per-breaker
//! mutex is taken only for rare work: transitions, half-open probes, operator changes.
//!
//! Half-open probes end: one not recorded within `half_open.probe_timeout` counts as
//! failed (the breaker re-opens) and gives its place back. There is no timer; an overdue
//! probe is noticed by the next admission that takes the lock, or by `snapshot`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use super::clock::{Clock, Nanos};
use super::events::{Reason, Remote, RemoteMove, Transition, TransitionListener};
use super::policy::{BreakerPolicy, TripCause};
use super::state::{Mode, State, Word};
use super::window::{Window, WindowContents, WindowCounts};

/// What the caller decided about a finished call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failure,
    /// Says nothing about the upstream's health (e.g. the client went away).
    Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub latency: Duration,
    /// Overrides the policy's latency threshold when set (a predicate may decide).
    pub slow: Option<bool>,
}

impl Outcome {
    pub fn success(latency: Duration) -> Self {
        Self {
            verdict: Verdict::Success,
            latency,
            slow: None,
        }
    }

    pub fn failure(latency: Duration) -> Self {
        Self {
            verdict: Verdict::Failure,
            latency,
            slow: None,
        }
    }

    pub fn ignored() -> Self {
        Self {
            verdict: Verdict::Ignored,
            latency: Duration::ZERO,
            slow: None,
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// Open, HalfOpen (all probes taken) or ForcedOpen.
    pub state: State,
    /// A hint for `Retry-After`: the rest of the open period (zero when unknown).
    pub retry_after: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PermitKind {
    /// Counted in the window (closed, metrics-only).
    Tracked,
    /// A half-open probe: its outcome decides whether the breaker closes.
    Probe,
    /// Disabled breaker: nothing is recorded.
    Untracked,
}

/// Admission to call the upstream, recorded with `Breaker::record` exactly once. A permit
/// dropped unrecorded (the request was cancelled) counts as ignored: for a half-open
/// probe that gives its place back.
///
/// Only probes hold a reference to their breaker: an ordinary permit touches no shared
/// reference count, so two cores admitting at once do not contend.
#[derive(Debug)]
pub struct Permit {
    breaker_id: u64,
    epoch: u64,
    kind: PermitKind,
    probe: Option<ProbeGuard>,
}

impl Permit {
    pub fn is_probe(&self) -> bool {
        self.kind == PermitKind::Probe
    }
}

/// Returns an unrecorded probe's place when dropped.
#[derive(Debug)]
struct ProbeGuard {
    breaker: Arc<Breaker>,
    epoch: u64,
    /// Which of the breaker's outstanding probes this is.
    id: u64,
    armed: bool,
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if self.armed {
            self.breaker
                .record_probe(self.epoch, self.id, Outcome::ignored());
        }
    }
}

/// A probe admitted and not yet recorded.
#[derive(Debug, Clone, Copy)]
struct OutstandingProbe {
    id: u64,
    epoch: u64,
    /// Past this, it counts as failed and no longer holds a place.
    expires: Nanos,
}

/// Bookkeeping that only changes under the lock.
#[derive(Debug)]
struct Control {
    probes_admitted: u32,
    /// Probes admitted and neither recorded nor expired, from this or an earlier
    /// half-open period: the upstream never sees more than `permitted_requests` probes at
    /// once (a probe that expired may still be running; it no longer counts).
    outstanding: Vec<OutstandingProbe>,
    next_probe_id: u64,
    probe_successes: u32,
    /// Consecutive re-opens after failed probes; drives backoff. Zero once closed.
    reopens: u32,
    since: Nanos,
    since_wall: SystemTime,
    /// The instance the current state was adopted from (None: decided here).
    origin: Option<Arc<str>>,
    /// Why the breaker entered its current state (None: it never moved).
    entered_by: Option<Reason>,
}

/// A read-only view for the admin API and metrics.
#[derive(Debug, Clone)]
pub struct BreakerSnapshot {
    pub state: State,
    pub mode: Mode,
    pub in_state_for: Duration,
    pub since: SystemTime,
    pub window: WindowCounts,
    pub consecutive_failures: u32,
    pub rejections: u64,
    /// Left of the open period, when open.
    pub open_remaining: Option<Duration>,
    pub probes_admitted: u32,
    pub probe_successes: u32,
    /// The instance the current state was adopted from (None: decided here).
    pub origin: Option<Arc<str>>,
    /// Why the breaker entered its current state (None: it never moved).
    pub entered_by: Option<Reason>,
}

/// The settings a breaker judges by and the window they judge, swapped together: a
/// record never reads one config's thresholds against another window.
#[derive(Debug)]
struct Regime {
    policy: BreakerPolicy,
    window: Arc<Window>,
}

/// What a new policy did to the window a breaker had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowCarried {
    /// Same shape: the window itself was kept.
    Kept,
    /// Another kind or size: its calls were moved into the new shape where they fit.
    Rebuilt { kept: u32, dropped: u32 },
}

/// A breaker's state in a form another process can adopt (graceful upgrade).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BreakerExport {
    pub state: State,
    /// Left of the open period, when open.
    pub open_remaining: Option<Duration>,
    pub reopens: u32,
    pub consecutive_failures: u32,
    pub window: WindowContents,
}

#[derive(Debug)]
pub struct Breaker {
    /// Tells permits of different breakers apart.
    id: u64,
    name: Arc<str>,
    clock: Arc<dyn Clock>,
    listener: Arc<dyn TransitionListener>,
    word: AtomicU64,
    open_until: AtomicU64,
    regime: ArcSwap<Regime>,
    consecutive_failures: AtomicU32,
    rejections: AtomicU64,
    control: Mutex<Control>,
}

impl Breaker {
    pub fn new(
        name: impl Into<Arc<str>>,
        policy: BreakerPolicy,
        clock: Arc<dyn Clock>,
        listener: Arc<dyn TransitionListener>,
    ) -> Self {
        static IDS: AtomicU64 = AtomicU64::new(1);
        let now = clock.now();
        Self {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            name: name.into(),
            word: AtomicU64::new(
                Word {
                    state: State::Closed,
                    epoch: 0,
                }
                .pack(),
            ),
            open_until: AtomicU64::new(0),
            regime: ArcSwap::from_pointee(Regime {
                policy,
                window: Arc::new(Window::new(policy.window)),
            }),
            consecutive_failures: AtomicU32::new(0),
            rejections: AtomicU64::new(0),
            control: Mutex::new(Control {
                probes_admitted: 0,
                outstanding: Vec::new(),
                next_probe_id: 0,
                probe_successes: 0,
                reopens: 0,
                since: now,
                since_wall: SystemTime::now(),
                origin: None,
                entered_by: None,
            }),
            clock,
            listener,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn policy(&self) -> BreakerPolicy {
        self.regime.load().policy
    }

    /// Applies a new policy from the next recorded call; state, the rest of an open
    /// period, probes in flight and the consecutive-failure count stay. The window is
    /// kept when its shape is unchanged, else rebuilt from its contents.
    pub fn reconfigure(&self, policy: BreakerPolicy) -> Option<WindowCarried> {
        let _control = self.lock();
        let current = self.regime.load_full();
        if current.policy == policy {
            return None;
        }
        let (window, carried) = if current.policy.window == policy.window {
            (Arc::clone(&current.window), WindowCarried::Kept)
        } else {
            let now = self.clock.now();
            let restored = Window::restore(policy.window, &current.window.contents(now), now);
            let carried = WindowCarried::Rebuilt {
                kept: restored.kept,
                dropped: restored.dropped,
            };
            (Arc::new(restored.window), carried)
        };
        self.regime.store(Arc::new(Regime { policy, window }));
        Some(carried)
    }

    /// The automatic part of the state (closed, open with the rest of its period,
    /// half-open) with its window and counts, for another process to adopt.
    pub fn export(&self) -> BreakerExport {
        let control = self.lock();
        let word = self.word();
        let now = self.clock.now();
        BreakerExport {
            state: word.state,
            open_remaining: (word.state == State::Open)
                .then(|| now.until(Nanos(self.open_until.load(Ordering::Acquire)))),
            reopens: control.reopens,
            consecutive_failures: self.consecutive_failures.load(Ordering::Acquire),
            window: self.regime.load().window.contents(now),
        }
    }

    /// Takes over an exported state. Operator states are neither adopted nor replaced
    /// (modes are the caller's business); a half-open breaker starts its probes afresh. Returns the
    /// calls of the window that did not fit this breaker's window.
    pub fn adopt(&self, state: &BreakerExport) -> u32 {
        let mut control = self.lock();
        let now = self.clock.now();
        let policy = self.regime.load().policy;
        let restored = Window::restore(policy.window, &state.window, now);
        self.regime.store(Arc::new(Regime {
            policy,
            window: Arc::new(restored.window),
        }));
        self.consecutive_failures
            .store(state.consecutive_failures, Ordering::Release);
        control.reopens = state.reopens;
        let word = self.word();
        let automatic = |s: State| matches!(s, State::Open | State::HalfOpen | State::Closed);
        if automatic(state.state) && automatic(word.state) {
            let remaining = state
                .open_remaining
                .unwrap_or_default()
                .min(self.longest_open());
            self.open_until
                .store(now.after(remaining).0, Ordering::Release);
            control.probes_admitted = 0;
            control.probe_successes = 0;
            self.word
                .store(word.next(state.state).pack(), Ordering::Release);
        }
        restored.dropped
    }

    pub fn state(&self) -> State {
        self.word().state
    }

    fn word(&self) -> Word {
        Word::unpack(self.word.load(Ordering::Acquire))
    }

    fn lock(&self) -> MutexGuard<'_, Control> {
        // A panic while holding this lock cannot leave Control inconsistent in a way
        // worse than a stale count; keep serving rather than poison every request.
        self.control
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Asks to call the upstream.
    pub fn try_acquire(self: &Arc<Self>) -> Result<Permit, Rejected> {
        let word = self.word();
        match word.state {
            State::Closed | State::MetricsOnly => Ok(self.permit(word.epoch, PermitKind::Tracked)),
            State::Disabled => Ok(self.permit(word.epoch, PermitKind::Untracked)),
            State::ForcedOpen => Err(self.reject(State::ForcedOpen, Duration::ZERO)),
            State::Open => {
                let now = self.clock.now();
                let until = Nanos(self.open_until.load(Ordering::Acquire));
                if now < until {
                    return Err(self.reject(State::Open, now.until(until)));
                }
                self.acquire_slow()
            }
            State::HalfOpen => self.acquire_slow(),
        }
    }

    fn permit(self: &Arc<Self>, epoch: u64, kind: PermitKind) -> Permit {
        Permit {
            breaker_id: self.id,
            epoch,
            kind,
            probe: None,
        }
    }

    /// Admits a probe (caller holds the lock and checked there is a place).
    fn probe_permit(self: &Arc<Self>, control: &mut Control, epoch: u64) -> Permit {
        let id = control.next_probe_id;
        control.next_probe_id += 1;
        control.probes_admitted += 1;
        control.outstanding.push(OutstandingProbe {
            id,
            epoch,
            expires: self
                .clock
                .now()
                .after(self.policy().half_open.probe_timeout),
        });
        Permit {
            breaker_id: self.id,
            epoch,
            kind: PermitKind::Probe,
            probe: Some(ProbeGuard {
                breaker: Arc::clone(self),
                epoch,
                id,
                armed: true,
            }),
        }
    }

    /// Records the outcome of the call `permit` admitted.
    /// Returns whether it counted as an ordinary call of the current episode (what a
    /// graceful upgrade forwards to the new process; a probe's result stays here).
    pub fn record(&self, mut permit: Permit, outcome: Outcome) -> bool {
        if permit.breaker_id != self.id {
            debug_assert!(
                false,
                "permit recorded on breaker `{}` that did not issue it",
                self.name
            );
            return false;
        }
        match permit.kind {
            PermitKind::Untracked => false,
            PermitKind::Tracked => self.record_tracked(permit.epoch, outcome),
            PermitKind::Probe => {
                if let Some(guard) = permit.probe.as_mut() {
                    guard.armed = false;
                    self.record_probe(guard.epoch, guard.id, outcome);
                }
                false
            }
        }
    }

    /// Takes an outcome as if this breaker had admitted the call (when it would have):
    /// how a shadow policy, which decides nothing, follows the live traffic. Returns
    /// whether it would have admitted it; a call it would have rejected counts as a
    /// rejection.
    pub fn observe(self: &Arc<Self>, outcome: Outcome) -> bool {
        match self.try_acquire() {
            Ok(permit) => {
                self.record(permit, outcome);
                true
            }
            Err(_) => false,
        }
    }

    /// Records an outcome of a call another process admitted (graceful upgrade: the old
    /// process's last requests). Counted only while closed or metrics-only, like any
    /// call of the current episode; a probe's result belongs to the process that sent it.
    pub fn record_elsewhere(&self, outcome: Outcome) {
        let word = self.word();
        if matches!(word.state, State::Closed | State::MetricsOnly) {
            self.record_tracked(word.epoch, outcome);
        }
    }

    /// The longest this breaker's policy ever keeps it open: what another process's
    /// or instance's open period is cut to.
    fn longest_open(&self) -> Duration {
        let policy = self.policy();
        policy
            .backoff
            .map_or(policy.open_duration, |b| b.max.max(policy.open_duration))
    }

    fn reject(&self, state: State, retry_after: Duration) -> Rejected {
        self.rejections.fetch_add(1, Ordering::Relaxed);
        Rejected { state, retry_after }
    }

    /// Open past its deadline, or half-open: decided under the lock.
    fn acquire_slow(self: &Arc<Self>) -> Result<Permit, Rejected> {
        let mut control = self.lock();
        // A stuck probe re-opens the breaker here, so this call is rejected as open.
        let expired = self.expire_probes(&mut control);
        let mut word = self.word();
        let mut event = None;
        if word.state == State::Open {
            let now = self.clock.now();
            let until = Nanos(self.open_until.load(Ordering::Acquire));
            if now < until {
                drop(control);
                self.emit(expired);
                return Err(self.reject(State::Open, now.until(until)));
            }
            let (next, transition) = self.transition(
                &mut control,
                word,
                State::HalfOpen,
                Reason::OpenPeriodElapsed,
                None,
                None,
            );
            word = next;
            event = Some(transition);
        }
        let policy = self.policy();
        let permitted = policy.half_open.permitted_requests.get();
        let result = match word.state {
            State::HalfOpen
                if control.probes_admitted < permitted
                    && control.outstanding.len() < permitted as usize =>
            {
                Ok(self.probe_permit(&mut control, word.epoch))
            }
            State::HalfOpen => {
                let hint = policy.open_duration.min(Duration::from_secs(1));
                Err(self.reject(State::HalfOpen, hint))
            }
            // Changed while we waited for the lock: take the fast path again.
            _ => {
                drop(control);
                self.emit(expired);
                return self.try_acquire();
            }
        };
        drop(control);
        self.emit(expired);
        self.emit(event);
        result
    }

    fn record_tracked(&self, epoch: u64, outcome: Outcome) -> bool {
        let word = self.word();
        // The episode this call was admitted in is over: its outcome describes the past.
        if word.epoch != epoch || outcome.verdict == Verdict::Ignored {
            return false;
        }
        let failure = outcome.verdict == Verdict::Failure;
        let regime = self.regime.load();
        let slow = outcome
            .slow
            .unwrap_or_else(|| regime.policy.is_slow(outcome.latency));
        let now = self.clock.now();
        let window = &regime.window;
        window.record(now, failure, slow);
        let consecutive = if failure {
            self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            // Read first: a store on every success would bounce the cache line between cores.
            if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                self.consecutive_failures.store(0, Ordering::Release);
            }
            0
        };
        // Only a failure or a slow call can tip a closed breaker; metrics-only never trips.
        if word.state != State::Closed || !(failure || slow) {
            return true;
        }
        let counts = window.counts(now);
        if let Some(cause) = regime.policy.trip_cause(counts, consecutive) {
            self.trip(word, cause, counts, consecutive);
        }
        true
    }

    fn trip(&self, seen: Word, cause: TripCause, counts: WindowCounts, consecutive: u32) {
        let mut control = self.lock();
        let word = self.word();
        if word != seen {
            return; // another request already moved the breaker on
        }
        let open_for = self.policy().open_duration(0, self.entropy());
        let snapshot = Some((counts, consecutive));
        let (_, event) = self.transition(
            &mut control,
            word,
            State::Open,
            Reason::Tripped(cause),
            Some(open_for),
            snapshot,
        );
        drop(control);
        self.emit(Some(event));
    }

    fn record_probe(&self, epoch: u64, id: u64, outcome: Outcome) {
        let mut control = self.lock();
        let Some(at) = control.outstanding.iter().position(|p| p.id == id) else {
            // It expired: already counted as failed, its place already given back.
            return;
        };
        control.outstanding.swap_remove(at);
        let word = self.word();
        if word.epoch != epoch || word.state != State::HalfOpen {
            return;
        }
        let policy = self.policy();
        let slow = outcome
            .slow
            .unwrap_or_else(|| policy.is_slow(outcome.latency));
        let event = match outcome.verdict {
            Verdict::Ignored => {
                // An uninformative probe gives its place back.
                control.probes_admitted = control.probes_admitted.saturating_sub(1);
                None
            }
            // A slow probe says the upstream has not recovered either.
            Verdict::Failure => Some(self.reopen(&mut control, word)),
            Verdict::Success if slow => Some(self.reopen(&mut control, word)),
            Verdict::Success => {
                control.probe_successes += 1;
                if control.probe_successes >= policy.half_open.success_threshold.get() {
                    control.reopens = 0;
                    let (_, event) = self.transition(
                        &mut control,
                        word,
                        State::Closed,
                        Reason::ProbesSucceeded,
                        None,
                        None,
                    );
                    Some(event)
                } else {
                    None
                }
            }
        };
        drop(control);
        self.emit(event);
    }

    fn reopen(&self, control: &mut Control, word: Word) -> Transition {
        self.reopen_for(control, word, Reason::ProbeFailed)
    }

    fn reopen_for(&self, control: &mut Control, word: Word, reason: Reason) -> Transition {
        control.reopens = control.reopens.saturating_add(1);
        let open_for = self.policy().open_duration(control.reopens, self.entropy());
        self.transition(control, word, State::Open, reason, Some(open_for), None)
            .1
    }

    /// Drops every probe past its `probe_timeout` (caller holds the lock). One admitted
    /// in the current half-open period counts as a failed probe: the breaker re-opens
    /// (with backoff). Older ones only give their place back.
    fn expire_probes(&self, control: &mut Control) -> Option<Transition> {
        if control.outstanding.is_empty() {
            return None;
        }
        let now = self.clock.now();
        let word = self.word();
        let before = control.outstanding.len();
        let mut current_expired = false;
        control.outstanding.retain(|p| {
            let expired = now >= p.expires;
            current_expired |= expired && p.epoch == word.epoch;
            !expired
        });
        if control.outstanding.len() == before {
            return None;
        }
        (current_expired && word.state == State::HalfOpen)
            .then(|| self.reopen_for(control, word, Reason::ProbeTimedOut))
    }

    /// Another instance of the fleet moved its breaker for this upstream. A remote open
    /// is adopted by a closed or half-open breaker, for the rest of the other's open
    /// period (an open one keeps its own period: nothing extends an open period, so the
    /// fleet cannot hold itself open). A remote close ends an open period here early:
    /// the breaker goes half-open and its own probes decide. Operator states ignore
    /// both. Returns whether the breaker moved.
    pub fn adopt_remote(&self, remote_move: RemoteMove, remote: Remote) -> bool {
        let mut control = self.lock();
        let word = self.word();
        let (to, open_for) = match (remote_move, word.state) {
            (RemoteMove::Opened { remaining }, State::Closed | State::HalfOpen)
                if !remaining.is_zero() =>
            {
                (State::Open, Some(remaining.min(self.longest_open())))
            }
            (RemoteMove::Closed, State::Open) => (State::HalfOpen, None),
            _ => return false,
        };
        let (_, mut event) =
            self.transition(&mut control, word, to, Reason::Adopted, open_for, None);
        control.origin = Some(Arc::clone(&remote.instance));
        event.remote = Some(remote);
        drop(control);
        self.emit(Some(event));
        true
    }

    /// Operator override: force open, disable, metrics-only, or back to automatic.
    pub fn set_mode(&self, mode: Mode) -> Option<Transition> {
        self.operator_move(|current| {
            let to = match mode {
                Mode::Automatic
                    if matches!(current, State::Closed | State::Open | State::HalfOpen) =>
                {
                    return None;
                }
                Mode::Automatic => State::Closed,
                Mode::ForcedOpen => State::ForcedOpen,
                Mode::Disabled => State::Disabled,
                Mode::MetricsOnly => State::MetricsOnly,
            };
            (to != current).then_some((to, Reason::Operator(mode)))
        })
    }

    /// Back to closed and automatic, with an empty window and no backoff history.
    pub fn reset(&self) -> Option<Transition> {
        self.reset_into(Mode::Automatic)
    }

    /// A reset straight into `mode` (the file's, when it is not automatic): one move,
    /// so no call is admitted in between.
    pub fn reset_into(&self, mode: Mode) -> Option<Transition> {
        let to = match mode {
            Mode::Automatic => State::Closed,
            Mode::ForcedOpen => State::ForcedOpen,
            Mode::Disabled => State::Disabled,
            Mode::MetricsOnly => State::MetricsOnly,
        };
        self.operator_move(|_| Some((to, Reason::Reset)))
    }

    /// An operator's change: `decide` picks the target from the current state (None:
    /// nothing to do). Backoff history is forgotten.
    fn operator_move(
        &self,
        decide: impl FnOnce(State) -> Option<(State, Reason)>,
    ) -> Option<Transition> {
        let mut control = self.lock();
        let word = self.word();
        let (to, reason) = decide(word.state)?;
        control.reopens = 0;
        let (_, event) = self.transition(&mut control, word, to, reason, None, None);
        drop(control);
        self.emit(Some(event.clone()));
        Some(event)
    }

    pub fn mode(&self) -> Mode {
        match self.state() {
            State::ForcedOpen => Mode::ForcedOpen,
            State::Disabled => Mode::Disabled,
            State::MetricsOnly => Mode::MetricsOnly,
            _ => Mode::Automatic,
        }
    }

    pub fn snapshot(&self) -> BreakerSnapshot {
        let mut control = self.lock();
        let event = self.expire_probes(&mut control);
        let word = self.word();
        let now = self.clock.now();
        let open_remaining = (word.state == State::Open)
            .then(|| now.until(Nanos(self.open_until.load(Ordering::Acquire))));
        let snapshot = BreakerSnapshot {
            state: word.state,
            mode: self.mode(),
            in_state_for: control.since.until(now),
            since: control.since_wall,
            window: self.regime.load().window.counts(now),
            consecutive_failures: self.consecutive_failures.load(Ordering::Acquire),
            rejections: self.rejections.load(Ordering::Relaxed),
            open_remaining,
            probes_admitted: control.probes_admitted,
            probe_successes: control.probe_successes,
            origin: control.origin.clone(),
            entered_by: control.entered_by,
        };
        drop(control);
        self.emit(event);
        snapshot
    }

    /// Moves to `to` (caller holds the lock). Every new state starts with a fresh window.
    /// `snapshot` is the window the decision was taken on; None reads it now.
    fn transition(
        &self,
        control: &mut Control,
        from: Word,
        to: State,
        reason: Reason,
        open_for: Option<Duration>,
        snapshot: Option<(WindowCounts, u32)>,
    ) -> (Word, Transition) {
        let now = self.clock.now();
        let (window, consecutive) = snapshot.unwrap_or_else(|| {
            (
                self.regime.load().window.counts(now),
                self.consecutive_failures.load(Ordering::Acquire),
            )
        });
        if let Some(d) = open_for {
            self.open_until.store(now.after(d).0, Ordering::Release);
        }
        let policy = self.policy();
        self.regime.store(Arc::new(Regime {
            policy,
            window: Arc::new(Window::new(policy.window)),
        }));
        self.consecutive_failures.store(0, Ordering::Release);
        control.probes_admitted = 0;
        control.probe_successes = 0;
        control.since = now;
        control.since_wall = SystemTime::now();
        control.origin = None;
        control.entered_by = Some(reason);
        let next = from.next(to);
        self.word.store(next.pack(), Ordering::Release);
        let event = Transition {
            breaker: Arc::clone(&self.name),
            from: from.state,
            to,
            reason,
            at: control.since_wall,
            window,
            consecutive_failures: consecutive,
            open_for,
            remote: None,
        };
        (next, event)
    }

    fn emit(&self, event: Option<Transition>) {
        if let Some(event) = event {
            self.listener.on_transition(&event);
        }
    }

    /// A value in [0, 1) for backoff jitter: the clock's low bits, mixed (splitmix64).
    fn entropy(&self) -> f64 {
        let mut z = self.clock.now().0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}
