use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<Transition>>);

impl TransitionListener for Recorder {
    fn on_transition(&self, t: &Transition) {
        if let Ok(mut v) = self.0.lock() {
            v.push(t.clone());
        }
    }
}

impl Recorder {
    fn seen(&self) -> Vec<(State, State, Reason)> {
        self.0
            .lock()
            .map(|v| v.iter().map(|t| (t.from, t.to, t.reason)).collect())
            .unwrap_or_default()
    }

    fn last(&self) -> Option<Transition> {
        self.0.lock().ok().and_then(|v| v.last().cloned())
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

fn nzu(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A policy that trips on nothing unless a test turns a condition on.
fn quiet() -> BreakerPolicy {
    BreakerPolicy {
        window: WindowPolicy::Count { size: nzu(10) },
        minimum_requests: nz(4),
        failure_rate: None,
        consecutive_failures: None,
        failures_in_window: None,
        slow_call: None,
        open_duration: Duration::from_secs(10),
        backoff: None,
        half_open: HalfOpenPolicy {
            permitted_requests: nz(2),
            success_threshold: nz(2),
            probe_timeout: Duration::from_secs(30),
        },
    }
}

struct Fixture {
    breaker: Arc<Breaker>,
    clock: Arc<ManualClock>,
    events: Arc<Recorder>,
}

fn fixture(policy: BreakerPolicy) -> Fixture {
    let clock = Arc::new(ManualClock::default());
    let events = Arc::new(Recorder::default());
    let breaker = Arc::new(Breaker::new("test", policy, clock.clone(), events.clone()));
    Fixture {
        breaker,
        clock,
        events,
    }
}

impl Fixture {
    fn call(&self, verdict: Verdict, latency: Duration) {
        let permit = self.breaker.try_acquire().expect("admitted");
        self.breaker.record(
            permit,
            Outcome {
                verdict,
                latency,
                slow: None,
            },
        );
    }

    fn fail(&self) {
        self.call(Verdict::Failure, ms(1));
    }

    fn succeed(&self) {
        self.call(Verdict::Success, ms(1));
    }

    fn open_it(&self) {
        while self.breaker.state() == State::Closed {
            self.fail();
        }
        assert_eq!(self.breaker.state(), State::Open);
    }
}

#[test]
fn opens_after_exactly_n_consecutive_failures() {
    let f = fixture(BreakerPolicy {
        consecutive_failures: Some(nz(3)),
        ..quiet()
    });
    f.fail();
    f.fail();
    f.succeed(); // resets the run
    f.fail();
    f.fail();
    assert_eq!(f.breaker.state(), State::Closed);
    f.fail();
    assert_eq!(f.breaker.state(), State::Open);
    let t = f.events.last().expect("event");
    assert_eq!(t.reason, Reason::Tripped(TripCause::ConsecutiveFailures));
    assert_eq!(t.consecutive_failures, 3);
    assert_eq!(
        t.window,
        WindowCounts {
            calls: 6,
            failures: 5,
            slow: 0
        }
    );
    assert_eq!(t.open_for, Some(Duration::from_secs(10)));
}

#[test]
fn failure_rate_waits_for_minimum_requests() {
    let f = fixture(BreakerPolicy {
        failure_rate: Some(0.5),
        ..quiet()
    });
    f.fail();
    f.fail();
    f.fail(); // 100% failures but only 3 calls < minimum 4
    assert_eq!(f.breaker.state(), State::Closed);
    f.fail(); // exactly at minimum_requests
    assert_eq!(f.breaker.state(), State::Open);
    assert_eq!(
        f.events.last().map(|t| t.reason),
        Some(Reason::Tripped(TripCause::FailureRate))
    );
}

#[test]
fn failure_rate_below_threshold_stays_closed() {
    let f = fixture(BreakerPolicy {
        failure_rate: Some(0.5),
        ..quiet()
    });
    for _ in 0..20 {
        f.succeed();
        f.succeed();
        f.fail(); // 33%
    }
    assert_eq!(f.breaker.state(), State::Closed);
    // The count window holds 10 calls: 2 more failures reach exactly 50%.
    f.fail();
    f.fail();
    assert_eq!(f.breaker.state(), State::Open);
}

#[test]
fn slow_calls_trip_on_their_own_rate() {
    let policy = BreakerPolicy {
        slow_call: Some(SlowCallPolicy {
            duration: ms(500),
            rate: 0.75,
        }),
        ..quiet()
    };
    let f = fixture(policy);
    f.call(Verdict::Success, ms(499));
    f.call(Verdict::Success, ms(500));
    f.call(Verdict::Success, ms(900));
    f.call(Verdict::Success, ms(10)); // 2 of 4 slow
    assert_eq!(f.breaker.state(), State::Closed);
    f.call(Verdict::Success, ms(800)); // window 5: 3 slow = 60%
    f.call(Verdict::Success, ms(800)); // 4 of 6 = 66%
    assert_eq!(f.breaker.state(), State::Closed);
    f.call(Verdict::Success, ms(800)); // 5 of 7 = 71%
    f.call(Verdict::Success, ms(800)); // 6 of 8 = 75%
    assert_eq!(f.breaker.state(), State::Open);
    assert_eq!(
        f.events.last().map(|t| t.reason),
        Some(Reason::Tripped(TripCause::SlowCallRate))
    );
}

#[test]
fn an_explicit_slow_flag_overrides_latency() {
    let policy = BreakerPolicy {
        minimum_requests: nz(1),
        slow_call: Some(SlowCallPolicy {
            duration: Duration::from_secs(60),
            rate: 1.0,
        }),
        ..quiet()
    };
    let f = fixture(policy);
    let permit = f.breaker.try_acquire().expect("admitted");
    f.breaker.record(
        permit,
        Outcome {
            slow: Some(true),
            ..Outcome::success(ms(1))
        },
    );
    assert_eq!(f.breaker.state(), State::Open);
}

#[test]
fn open_rejects_with_the_remaining_time_then_admits_one_probe() {
    let f = fixture(BreakerPolicy {
        consecutive_failures: Some(nz(1)),
        ..quiet()
    });
    f.open_it();
    f.clock.advance(Duration::from_secs(4));
    let rejected = f.breaker.try_acquire().expect_err("open");
    assert_eq!(
        rejected,
        Rejected {
            state: State::Open,
            retry_after: Duration::from_secs(6)
        }
    );
    f.clock.advance(Duration::from_secs(6)); // exactly at the deadline
    let probe = f.breaker.try_acquire().expect("probe admitted");
    assert!(probe.is_probe());
    assert_eq!(f.breaker.state(), State::HalfOpen);
    assert_eq!(f.breaker.snapshot().rejections, 1);
    drop(probe);
}

#[test]
fn half_open_admits_only_permitted_probes_and_closes_after_successes() {
    let f = fixture(BreakerPolicy {
        consecutive_failures: Some(nz(1)),
        ..quiet()
    });
    f.open_it();
    f.clock.advance(Duration::from_secs(10));
    let a = f.breaker.try_acquire().expect("probe 1");
    let b = f.breaker.try_acquire().expect("probe 2");
    let extra = f.breaker.try_acquire().expect_err("third probe");
    assert_eq!(extra.state, State::HalfOpen);
    f.breaker.record(a, Outcome::success(ms(1)));
    assert_eq!(f.breaker.state(), State::HalfOpen);
    assert!(
        f.breaker.try_acquire().is_err(),
        "a used probe is not given back"
    );
    f.breaker.record(b, Outcome::success(ms(1)));
    assert_eq!(f.breaker.state(), State::Closed);
    assert_eq!(
        f.events.seen(),
        vec![
            (
                State::Closed,
                State::Open,
                Reason::Tripped(TripCause::ConsecutiveFailures)
            ),
            (State::Open, State::HalfOpen, Reason::OpenPeriodElapsed),
            (State::HalfOpen, State::Closed, Reason::ProbesSucceeded),
        ]
    );
    // Closed again with a fresh window.
    assert_eq!(f.breaker.snapshot().window, WindowCounts::default());
}

#[test]
fn a_failed_probe_reopens_and_cancelled_probes_give_their_place_back() {
    let f = fixture(BreakerPolicy {
        consecutive_failures: Some(nz(1)),
        ..quiet()
    });
    f.open_it();
    f.clock.advance(Duration::from_secs(10));
    let a = f.breaker.try_acquire().expect("probe");
    let b = f.breaker.try_acquire().expect("probe");
    drop(a); // client went away: not a verdict on the upstream
    let c = f.breaker.try_acquire().expect("freed place");
    f.breaker.record(c, Outcome::ignored());
    let d = f.breaker.try_acquire().expect("freed again");
    f.breaker.record(b, Outcome::failure(ms(1)));
    assert_eq!(f.breaker.state(), State::Open);
    assert_eq!(f.events.last().map(|t| t.reason), Some(Reason::ProbeFailed));
    // A probe from the finished half-open period changes nothing.
    f.breaker.record(d, Outcome::success(ms(1)));
    assert_eq!(f.breaker.state(), State::Open);
}

#[test]
fn a_stuck_probe_counts_as_failed_after_probe_timeout_and_frees_its_place() {
    let f = fixture(BreakerPolicy {
        consecutive_failures: Some(nz(1)),
        backoff: Some(BackoffPolicy {
            multiplier: 2.0,
            max: Duration::from_secs(60),
            jitter: 0.0,
        }),
        half_open: HalfOpenPolicy {
            permitted_requests: nz(1),
            success_threshold: nz(1),
            probe_timeout: Duration::from_secs(5),
        },
        ..quiet()
    });
    f.open_it();
    f.clock.advance(Duration::from_secs(10));
    // The probe hangs (an upstream that never answers, a client that never reads).
    let stuck = f.breaker.try_acquire().expect("probe");
    f.clock.advance(Duration::from_secs(5) - ms(1));
    let rejected = f.breaker.try_acquire().expect_err("probe place taken");
    assert_eq!(rejected.state, State::HalfOpen);
    f.clock.advance(ms(1));
    // Overdue: a failed probe, so open again, with backoff, and the place is free.
    let rejected = f.breaker.try_acquire().expect_err("re-opened");
    assert_eq!(rejected.state, State::Open);
    let t = f.events.last().expect("event");
    assert_eq!((t.from, t.to), (State::HalfOpen, State::Open));
    assert_eq!(t.reason, Reason::ProbeTimedOut);
    assert_eq!(t.reason.as_str(), "probe_timed_out");
    assert_eq!(t.open_for, Some(Duration::from_secs(20)));
    f.clock.advance(Duration::from_secs(20));
    // The stuck call still holds its permit, yet a new probe is admitted and closes it.
    let fresh = f.breaker.try_acquire().expect("place given back");
    assert!(fresh.is_probe());
    f.breaker.record(fresh, Outcome::success(ms(1)));
    assert_eq!(f.breaker.state(), State::Closed);
    // The stuck call's late outcome belongs to a finished period: ignored.
    let transitions = f.events.seen().len();
    f.breaker.record(stuck, Outcome::failure(ms(1)));
    assert_eq!(f.breaker.state(), State::Closed);
    assert_eq!(f.events.seen().len(), transitions);
}

#[test]
fn an_overdue_probe_is_seen_by_snapshot_and_an_expired_permit_drops_quietly() {
    let f = fixture(BreakerPolicy {
        consecutive_failures: Some(nz(1)),
        half_open: HalfOpenPolicy {
            permitted_requests: nz(2),
            success_threshold: nz(1),
            probe_timeout: Duration::from_secs(15),
        },
        ..quiet()
    });
    f.open_it();
    f.clock.advance(Duration::from_secs(10));
    let first = f.breaker.try_acquire().expect("probe");
    let second = f.breaker.try_acquire().expect("probe");
    f.breaker.record(first, Outcome::success(ms(1)));
    assert_eq!(f.breaker.state(), State::Closed);
    // `second` is still out: once the breaker trips and half-opens again, it holds one of
    // the two places...
    f.open_it();
    f.clock.advance(Duration::from_secs(10));
    let _third = f.breaker.try_acquire().expect("probe");
    let rejected = f
        .breaker
        .try_acquire()
        .expect_err("one place held by `second`");
    assert_eq!(rejected.state, State::HalfOpen);
    // ...until it is overdue. Reading the state notices that `second` no longer counts
    // (it belongs to an earlier period: nothing re-opens) and `_third` is within its time.
    f.clock.advance(Duration::from_secs(5));
    let snapshot = f.breaker.snapshot();
    assert_eq!(snapshot.state, State::HalfOpen);
    let fourth = f.breaker.try_acquire().expect("place freed by expiry");
    assert!(fourth.is_probe());
    // Dropping the expired permit gives back nothing a second time.
    drop(second);
    let rejected = f.breaker.try_acquire().expect_err("both places taken");
    assert_eq!(rejected.state, State::HalfOpen);
    // Nothing asks for admission now; a scrape still sees the overdue probes re-open it.
    f.clock.advance(Duration::from_secs(15));
    assert_eq!(f.breaker.snapshot().state, State::Open);
    assert_eq!(
        f.events.last().map(|t| t.reason),
        Some(Reason::ProbeTimedOut)
    );
    drop(fourth);
}

#[test]
fn a_slow_probe_counts_as_not_recovered() {
    let policy = BreakerPolicy {
        consecutive_failures: Some(nz(1)),
        slow_call: Some(SlowCallPolicy {
            duration: ms(100),
            rate: 1.0,
        }),
        ..quiet()
    };
    let f = fixture(policy);
    f.open_it();
    f.clock.advance(Duration::from_secs(10));
    f.breaker.record(
        f.breaker.try_acquire().expect("probe"),
        Outcome::success(ms(150)),
    );
    assert_eq!(f.breaker.state(), State::Open);
}

#[test]
fn backoff_grows_per_reopen_up_to_the_cap() {
    let policy = BreakerPolicy {
        consecutive_failures: Some(nz(1)),
        open_duration: Duration::from_secs(1),
        backoff: Some(BackoffPolicy {
            multiplier: 2.0,
            max: Duration::from_secs(5),
            jitter: 0.0,
        }),
        ..quiet()
    };
    let f = fixture(policy);
    f.open_it();
    let mut open_for = Vec::new();
    for _ in 0..5 {
        let remaining = f.breaker.snapshot().open_remaining.expect("open");
        open_for.push(remaining);
        f.clock.advance(remaining);
        f.breaker.record(
            f.breaker.try_acquire().expect("probe"),
            Outcome::failure(ms(1)),
        );
    }
    let secs: Vec<u64> = open_for.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, vec![1, 2, 4, 5, 5]);
    // Recovery resets the backoff.
    let remaining = f.breaker.snapshot().open_remaining.expect("open");
    f.clock.advance(remaining);
    for _ in 0..2 {
        f.breaker.record(
            f.breaker.try_acquire().expect("probe"),
            Outcome::success(ms(1)),
        );
    }
    f.open_it();
    assert_eq!(
        f.breaker.snapshot().open_remaining,
        Some(Duration::from_secs(1))
    );
}

#[test]
fn jitter_stays_within_its_share_and_below_the_cap() {
    let policy = BreakerPolicy {
        open_duration: Duration::from_secs(10),
        backoff: Some(BackoffPolicy {
            multiplier: 3.0,
            max: Duration::from_secs(60),
            jitter: 0.2,
        }),
        ..quiet()
    };
    for reopens in 0..6 {
        for entropy in [0.0, 0.25, 0.5, 0.999] {
            let d = policy.open_duration(reopens, entropy).as_secs_f64();
            let base = (10.0 * 3f64.powi(reopens as i32)).min(60.0);
            assert!(
                d <= base + 1e-9 && d >= base * 0.8 - 1e-9,
                "reopens {reopens}: {d} vs {base}"
            );
        }
    }
}

#[test]
fn operator_states_override_traffic() {
    let f = fixture(BreakerPolicy {
        consecutive_failures: Some(nz(1)),
        ..quiet()
    });
    f.breaker.set_mode(Mode::ForcedOpen).expect("transition");
    assert_eq!(
        f.breaker.try_acquire().expect_err("forced").state,
        State::ForcedOpen
    );
    f.clock.advance(Duration::from_secs(3600));
    assert!(
        f.breaker.try_acquire().is_err(),
        "forced open never times out"
    );

    f.breaker.set_mode(Mode::Disabled).expect("transition");
    for _ in 0..5 {
        f.fail();
    }
    assert_eq!(f.breaker.state(), State::Disabled);
    assert_eq!(
        f.breaker.snapshot().window.calls,
        0,
        "disabled records nothing"
    );

    f.breaker.set_mode(Mode::MetricsOnly).expect("transition");
    for _ in 0..5 {
        f.fail();
    }
    assert_eq!(f.breaker.state(), State::MetricsOnly);
    assert_eq!(
        f.breaker.snapshot().window.failures,
        5,
        "metrics-only records"
    );

    f.breaker.set_mode(Mode::Automatic).expect("transition");
    assert_eq!(f.breaker.state(), State::Closed);
    assert!(
        f.breaker.set_mode(Mode::Automatic).is_none(),
        "already automatic"
    );
    f.fail();
    assert_eq!(f.breaker.state(), State::Open);
    assert_eq!(f.breaker.reset().map(|t| t.to), Some(State::Closed));
    assert_eq!(f.events.last().map(|t| t.reason), Some(Reason::Reset));
}

#[test]
fn a_cancelled_call_is_not_a_failure() {
    let f = fixture(BreakerPolicy {
        consecutive_failures: Some(nz(2)),
        ..quiet()
    });
    f.fail();
    let permit = f.breaker.try_acquire().expect("admitted");
    drop(permit);
    assert_eq!(f.breaker.snapshot().consecutive_failures, 1);
    assert_eq!(f.breaker.snapshot().window.calls, 1);
    f.fail();
    assert_eq!(f.breaker.state(), State::Open);
}

#[test]
fn outcomes_from_an_earlier_episode_are_dropped() {
    let f = fixture(BreakerPolicy {
        consecutive_failures: Some(nz(2)),
        ..quiet()
    });
    let old = f.breaker.try_acquire().expect("admitted");
    f.fail();
    f.fail(); // opens
    f.breaker.reset();
    f.breaker.record(old, Outcome::failure(ms(1)));
    assert_eq!(f.breaker.snapshot().window.calls, 0);
}

#[test]
fn time_window_failures_expire() {
    let policy = BreakerPolicy {
        window: WindowPolicy::Time {
            size: Duration::from_secs(10),
            buckets: nzu(10),
        },
        failure_rate: Some(0.5),
        ..quiet()
    };
    let f = fixture(policy);
    f.fail();
    f.fail();
    f.fail();
    f.clock.advance(Duration::from_secs(10)); // all three expire
    f.fail();
    f.succeed();
    f.succeed();
    assert_eq!(f.breaker.state(), State::Closed);
    assert_eq!(
        f.breaker.snapshot().window,
        WindowCounts {
            calls: 3,
            failures: 1,
            slow: 0
        }
    );
}

#[test]
fn broadcast_delivers_transitions_to_subscribers() {
    let broadcast = Arc::new(Broadcast::new(16));
    let mut rx = broadcast.subscribe();
    let clock = Arc::new(ManualClock::default());
    let policy = BreakerPolicy {
        consecutive_failures: Some(nz(1)),
        ..quiet()
    };
    let breaker = Arc::new(Breaker::new("b", policy, clock, broadcast));
    breaker.record(
        breaker.try_acquire().expect("admitted"),
        Outcome::failure(ms(1)),
    );
    let event = rx.try_recv().expect("event delivered");
    assert_eq!(
        (&*event.breaker, event.from, event.to),
        ("b", State::Closed, State::Open)
    );
}

/// Many threads on one breaker: half-open never has more than `permitted_requests`
/// probes in flight, and with a breaker that never trips every outcome is counted.
#[test]
fn concurrent_probes_never_exceed_the_permitted_number() {
    let policy = BreakerPolicy {
        consecutive_failures: Some(nz(1)),
        open_duration: ms(1),
        half_open: HalfOpenPolicy {
            permitted_requests: nz(3),
            success_threshold: nz(3),
            // Never within this test: an expired probe frees its place by design.
            probe_timeout: Duration::from_secs(86_400),
        },
        ..quiet()
    };
    let f = fixture(policy);
    let in_flight = Arc::new(AtomicU32::new(0));
    let max_seen = Arc::new(AtomicU32::new(0));
    let probes = Arc::new(AtomicU64::new(0));
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let (b, clock) = (f.breaker.clone(), f.clock.clone());
            let (in_flight, max_seen, probes) =
                (in_flight.clone(), max_seen.clone(), probes.clone());
            scope.spawn(move || {
                // Bounded by probes seen, not only by iterations: while one thread holds
                // the probes (it yields), the others are rejected so cheaply that they
                // could run out of iterations before half-open comes round again.
                for i in 0..5_000_000u64 {
                    if i >= 20_000 && probes.load(Ordering::Relaxed) >= 1_000 {
                        break;
                    }
                    if (i + t) % 7 == 0 {
                        clock.advance(ms(1));
                    }
                    let Ok(permit) = b.try_acquire() else {
                        continue;
                    };
                    let probe = permit.is_probe();
                    if probe {
                        probes.fetch_add(1, Ordering::Relaxed);
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        max_seen.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                    }
                    let outcome = if (i * 31 + t) % 5 == 0 {
                        Outcome::failure(ms(1))
                    } else {
                        Outcome::success(ms(1))
                    };
                    // A probe is counted in flight from its admission to the moment its
                    // outcome is recorded: the decrement is the last thing before
                    // `record` (after it, the place is already free and another thread's
                    // new probe could be counted before this one leaves: a false alarm).
                    if probe {
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                    }
                    b.record(permit, outcome);
                }
            });
        }
    });
    assert!(
        probes.load(Ordering::Relaxed) > 100,
        "the test must exercise half-open: {} probes",
        probes.load(Ordering::Relaxed)
    );
    assert!(
        max_seen.load(Ordering::SeqCst) <= 3,
        "max probes in flight {}",
        max_seen.load(Ordering::SeqCst)
    );
}

#[test]
fn concurrent_records_add_up() {
    let policy = BreakerPolicy {
        window: WindowPolicy::Count {
            size: nzu(1_000_000),
        },
        ..quiet()
    };
    let f = fixture(policy);
    f.breaker.set_mode(Mode::MetricsOnly);
    let threads = 4u32;
    let per_thread = 50_000u32;
    std::thread::scope(|scope| {
        for t in 0..threads {
            let b = f.breaker.clone();
            scope.spawn(move || {
                for i in 0..per_thread {
                    let permit = b.try_acquire().expect("metrics-only admits");
                    match (i + t) % 4 {
                        0 => _ = b.record(permit, Outcome::failure(ms(1))),
                        1 => drop(permit),
                        _ => _ = b.record(permit, Outcome::success(ms(1))),
                    }
                }
            });
        }
    });
    let counts = f.breaker.snapshot().window;
    assert_eq!(counts.calls, threads * per_thread / 4 * 3);
    assert_eq!(counts.failures, threads * per_thread / 4);
}

mod model {
    //! A deliberately simple reference model, and proptest driving both with the same ops.

    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    pub enum Op {
        Acquire,
        Record {
            index: usize,
            verdict: u8,
            latency_ms: u64,
        },
        Drop {
            index: usize,
        },
        Advance {
            ms: u64,
        },
        Mode(u8),
        Reset,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Acquire),
            4 => (0..8usize, 0..3u8, 0..400u64).prop_map(|(index, verdict, latency_ms)| Op::Record { index, verdict, latency_ms }),
            1 => (0..8usize).prop_map(|index| Op::Drop { index }),
            2 => (0..3_000u64).prop_map(|ms| Op::Advance { ms }),
            1 => (0..8u8).prop_map(Op::Mode),
            1 => Just(Op::Reset),
        ]
    }

    fn policy() -> impl Strategy<Value = BreakerPolicy> {
        (
            prop_oneof![
                (1..8usize).prop_map(|n| WindowPolicy::Count { size: nzu(n) }),
                (1..6usize, 1..5u64).prop_map(|(b, s)| WindowPolicy::Time {
                    size: Duration::from_secs(s),
                    buckets: nzu(b)
                }),
            ],
            1..6u32,
            proptest::option::of(prop_oneof![Just(0.25), Just(0.5), Just(1.0)]),
            (proptest::option::of(1..4u32), proptest::option::of(2..6u32)),
            proptest::option::of((50..300u64, prop_oneof![Just(0.5), Just(1.0)])),
            (100..2_000u64, proptest::bool::ANY),
            (1..4u32, 1..4u32, 50..4_000u64),
        )
            .prop_map(
                |(
                    window,
                    min,
                    rate,
                    (consecutive, in_window),
                    slow,
                    (open_ms, backoff),
                    (permitted, success, probe_ms),
                )| BreakerPolicy {
                    window,
                    minimum_requests: nz(min),
                    failure_rate: rate,
                    consecutive_failures: consecutive.map(nz),
                    failures_in_window: in_window.map(nz),
                    slow_call: slow.map(|(d, rate)| SlowCallPolicy {
                        duration: ms(d),
                        rate,
                    }),
                    open_duration: ms(open_ms),
                    backoff: backoff.then(|| BackoffPolicy {
                        multiplier: 2.0,
                        max: ms(open_ms * 3),
                        jitter: 0.0,
                    }),
                    half_open: HalfOpenPolicy {
                        permitted_requests: nz(permitted),
                        success_threshold: nz(success.min(permitted)),
                        probe_timeout: ms(probe_ms),
                    },
                },
            )
    }

    /// The same rules, written the obvious way: lists instead of atomics.
    struct Model {
        policy: BreakerPolicy,
        now: u64,
        state: State,
        epoch: u64,
        open_until: u64,
        calls: VecDeque<(u64, bool, bool)>,
        consecutive: u32,
        probes: u32,
        /// Probes neither recorded nor expired: (id, epoch, expires at).
        outstanding: Vec<(u64, u64, u64)>,
        next_id: u64,
        successes: u32,
        reopens: u32,
    }

    impl Model {
        fn counts(&self) -> WindowCounts {
            let held: Vec<&(u64, bool, bool)> = match self.policy.window {
                WindowPolicy::Count { size } => self.calls.iter().rev().take(size.get()).collect(),
                WindowPolicy::Time { size, buckets } => {
                    let slice = (size.as_nanos() / buckets.get() as u128) as u64;
                    let current = self.now / slice;
                    let oldest = (current + 1).saturating_sub(buckets.get() as u64);
                    self.calls
                        .iter()
                        .filter(|(t, ..)| t / slice >= oldest)
                        .collect()
                }
            };
            WindowCounts {
                calls: held.len() as u32,
                failures: held.iter().filter(|c| c.1).count() as u32,
                slow: held.iter().filter(|c| c.2).count() as u32,
            }
        }

        fn go(&mut self, state: State, open_for: Option<Duration>) {
            if let Some(d) = open_for {
                self.open_until = self.now + d.as_nanos() as u64;
            }
            self.state = state;
            self.epoch += 1;
            self.calls.clear();
            self.consecutive = 0;
            self.probes = 0;
            self.successes = 0;
        }

        /// Overdue probes leave; one of the current half-open period re-opens it.
        fn expire(&mut self) {
            let (now, epoch) = (self.now, self.epoch);
            let mut current = false;
            self.outstanding.retain(|&(_, e, expires)| {
                current |= now >= expires && e == epoch;
                now < expires
            });
            if current && self.state == State::HalfOpen {
                self.reopen();
            }
        }

        /// Ok(is_probe, epoch, probe id) or Err(state).
        fn acquire(&mut self) -> Result<(bool, u64, u64), State> {
            match self.state {
                State::Closed | State::MetricsOnly | State::Disabled => Ok((false, self.epoch, 0)),
                State::ForcedOpen => Err(State::ForcedOpen),
                State::Open if self.now < self.open_until => Err(State::Open),
                State::Open | State::HalfOpen => {
                    self.expire();
                    if self.state == State::Open && self.now < self.open_until {
                        return Err(State::Open);
                    }
                    if self.state == State::Open {
                        self.go(State::HalfOpen, None);
                    }
                    let permitted = self.policy.half_open.permitted_requests.get();
                    if self.probes < permitted && self.outstanding.len() < permitted as usize {
                        self.probes += 1;
                        let id = self.next_id;
                        self.next_id += 1;
                        let expires =
                            self.now + self.policy.half_open.probe_timeout.as_nanos() as u64;
                        self.outstanding.push((id, self.epoch, expires));
                        Ok((true, self.epoch, id))
                    } else {
                        Err(State::HalfOpen)
                    }
                }
            }
        }

        fn record(&mut self, probe: Option<u64>, epoch: u64, verdict: Verdict, latency: Duration) {
            if let Some(id) = probe {
                let Some(at) = self.outstanding.iter().position(|p| p.0 == id) else {
                    return; // expired: already counted
                };
                self.outstanding.remove(at);
            }
            let probe = probe.is_some();
            if epoch != self.epoch {
                return;
            }
            let slow = self.policy.is_slow(latency);
            if probe {
                match verdict {
                    Verdict::Ignored => self.probes -= 1,
                    Verdict::Failure => self.reopen(),
                    Verdict::Success if slow => self.reopen(),
                    Verdict::Success => {
                        self.successes += 1;
                        if self.successes >= self.policy.half_open.success_threshold.get() {
                            self.reopens = 0;
                            self.go(State::Closed, None);
                        }
                    }
                }
                return;
            }
            if self.state == State::Disabled || verdict == Verdict::Ignored {
                return;
            }
            let failure = verdict == Verdict::Failure;
            self.calls.push_back((self.now, failure, slow));
            self.consecutive = if failure { self.consecutive + 1 } else { 0 };
            if self.state == State::Closed && (failure || slow) && self.should_trip() {
                let d = self.open_for(0);
                self.go(State::Open, Some(d));
            }
        }

        /// The trip rules restated independently of `BreakerPolicy::trip_cause`.
        fn should_trip(&self) -> bool {
            let p = &self.policy;
            if p.consecutive_failures
                .is_some_and(|n| self.consecutive >= n.get())
            {
                return true;
            }
            let c = self.counts();
            if p.failures_in_window.is_some_and(|n| c.failures >= n.get()) {
                return true;
            }
            if c.calls == 0 || c.calls < p.minimum_requests.get() {
                return false;
            }
            let failing = p
                .failure_rate
                .is_some_and(|r| c.failures as f64 >= r * c.calls as f64);
            let slow = p
                .slow_call
                .is_some_and(|s| c.slow as f64 >= s.rate * c.calls as f64);
            failing || slow
        }

        /// Backoff restated: base * multiplier^reopens, capped (jitter is 0 here).
        fn open_for(&self, reopens: u32) -> Duration {
            match self.policy.backoff {
                None => self.policy.open_duration,
                Some(b) => {
                    let mut d = self.policy.open_duration.as_secs_f64();
                    for _ in 0..reopens {
                        d *= b.multiplier;
                    }
                    Duration::from_secs_f64(d.min(b.max.as_secs_f64()))
                }
            }
        }

        fn reopen(&mut self) {
            self.reopens += 1;
            let d = self.open_for(self.reopens);
            self.go(State::Open, Some(d));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn engine_matches_reference_model(policy in policy(), ops in proptest::collection::vec(op(), 1..120)) {
            let f = fixture(policy);
            let mut model = Model { policy, now: 0, state: State::Closed, epoch: 0, open_until: 0, calls: VecDeque::new(), consecutive: 0, probes: 0, outstanding: Vec::new(), next_id: 0, successes: 0, reopens: 0 };
            let mut held: Vec<(Permit, Option<u64>, u64)> = Vec::new();
            for op in ops {
                match op {
                    Op::Acquire => {
                        let expected = model.acquire();
                        match (f.breaker.try_acquire(), expected) {
                            (Ok(permit), Ok((probe, epoch, id))) => {
                                prop_assert_eq!(permit.is_probe(), probe);
                                held.push((permit, probe.then_some(id), epoch));
                            }
                            (Err(rejected), Err(state)) => prop_assert_eq!(rejected.state, state),
                            (got, want) => prop_assert!(false, "acquire: engine {:?}, model {:?}", got.map(|p| p.is_probe()), want),
                        }
                    }
                    Op::Record { index, verdict, latency_ms } if !held.is_empty() => {
                        let (permit, probe, epoch) = held.remove(index % held.len());
                        let verdict = [Verdict::Success, Verdict::Failure, Verdict::Ignored][verdict as usize];
                        let latency = ms(latency_ms);
                        f.breaker.record(permit, Outcome { verdict, latency, slow: None });
                        model.record(probe, epoch, verdict, latency);
                    }
                    Op::Drop { index } if !held.is_empty() => {
                        let (permit, probe, epoch) = held.remove(index % held.len());
                        drop(permit);
                        model.record(probe, epoch, Verdict::Ignored, Duration::ZERO);
                    }
                    Op::Record { .. } | Op::Drop { .. } => {}
                    Op::Advance { ms: step } => {
                        f.clock.advance(ms(step));
                        model.now += step * 1_000_000;
                    }
                    Op::Mode(m) => {
                        let mode = match m { 0 => Mode::ForcedOpen, 1 => Mode::Disabled, 2 => Mode::MetricsOnly, _ => Mode::Automatic };
                        let target = match mode {
                            Mode::Automatic if matches!(model.state, State::Closed | State::Open | State::HalfOpen) => None,
                            Mode::Automatic => Some(State::Closed),
                            Mode::ForcedOpen => Some(State::ForcedOpen),
                            Mode::Disabled => Some(State::Disabled),
                            Mode::MetricsOnly => Some(State::MetricsOnly),
                        };
                        let changed = f.breaker.set_mode(mode).is_some();
                        if let Some(to) = target.filter(|to| *to != model.state) {
                            model.reopens = 0;
                            model.go(to, None);
                            prop_assert!(changed);
                        } else {
                            prop_assert!(!changed);
                        }
                    }
                    Op::Reset => {
                        f.breaker.reset();
                        model.reopens = 0;
                        model.go(State::Closed, None);
                    }
                }
                let snapshot = f.breaker.snapshot();
                model.expire();
                prop_assert_eq!(snapshot.state, model.state);
                prop_assert_eq!(snapshot.window, model.counts());
                prop_assert_eq!(snapshot.consecutive_failures, model.consecutive);
            }
        }
    }
}

#[test]
fn a_new_policy_keeps_the_state_the_rest_of_the_open_period_and_the_window() {
    let f = fixture(BreakerPolicy {
        consecutive_failures: Some(nz(3)),
        ..quiet()
    });
    f.open_it();
    f.clock.advance(Duration::from_secs(4));
    // Other thresholds, same window shape: nothing is lost.
    let carried = f.breaker.reconfigure(BreakerPolicy {
        consecutive_failures: Some(nz(5)),
        open_duration: Duration::from_secs(60),
        ..quiet()
    });
    assert_eq!(carried, Some(WindowCarried::Kept));
    let snapshot = f.breaker.snapshot();
    assert_eq!(snapshot.state, State::Open);
    assert_eq!(snapshot.open_remaining, Some(Duration::from_secs(6)));
    // The same policy again changes nothing.
    assert_eq!(
        f.breaker.reconfigure(f.breaker.policy()),
        None,
        "unchanged policy"
    );
    // The new threshold applies from the next call: after the probe fails and the
    // breaker closes again later, 3 failures no longer trip it.
    f.clock.advance(Duration::from_secs(6));
    f.succeed();
    f.succeed();
    assert_eq!(f.breaker.state(), State::Closed);
    for _ in 0..4 {
        f.fail();
    }
    assert_eq!(f.breaker.state(), State::Closed, "5 now needed");
    f.fail();
    assert_eq!(f.breaker.state(), State::Open);
    assert_eq!(
        f.breaker.snapshot().open_remaining,
        Some(Duration::from_secs(60))
    );
}

#[test]
fn a_window_of_another_shape_is_rebuilt_from_the_calls_it_held() {
    let f = fixture(quiet());
    for _ in 0..6 {
        f.fail();
    }
    for _ in 0..4 {
        f.succeed();
    }
    // Count 10 -> count 5: the last five calls (one failure, four successes) stay.
    let carried = f.breaker.reconfigure(BreakerPolicy {
        window: WindowPolicy::Count { size: nzu(5) },
        ..quiet()
    });
    assert_eq!(
        carried,
        Some(WindowCarried::Rebuilt {
            kept: 5,
            dropped: 5
        })
    );
    assert_eq!(
        f.breaker.snapshot().window,
        WindowCounts {
            calls: 5,
            failures: 1,
            slow: 0
        }
    );
    // Count -> time: calls carry no time, so none can be placed.
    let carried = f.breaker.reconfigure(BreakerPolicy {
        window: WindowPolicy::Time {
            size: Duration::from_secs(10),
            buckets: nzu(5),
        },
        ..quiet()
    });
    assert_eq!(
        carried,
        Some(WindowCarried::Rebuilt {
            kept: 0,
            dropped: 5
        })
    );
}

#[test]
fn a_time_window_is_rebucketed_by_age() {
    let sec = Duration::from_secs;
    let policy = |size: u64, buckets: usize| BreakerPolicy {
        window: WindowPolicy::Time {
            size: sec(size),
            buckets: nzu(buckets),
        },
        ..quiet()
    };
    let f = fixture(policy(10, 10));
    f.clock.advance(sec(100));
    f.fail(); // at 100 s
    f.clock.advance(sec(6));
    f.succeed(); // at 106 s
    f.clock.advance(sec(1)); // now 107 s
    // Into 20 s in 4 buckets: both fit.
    assert_eq!(
        f.breaker.reconfigure(policy(20, 4)),
        Some(WindowCarried::Rebuilt {
            kept: 2,
            dropped: 0
        })
    );
    // Into 5 s: the failure, 7 s old, falls outside.
    assert_eq!(
        f.breaker.reconfigure(policy(5, 5)),
        Some(WindowCarried::Rebuilt {
            kept: 1,
            dropped: 1
        })
    );
    assert_eq!(f.breaker.snapshot().window.failures, 0);
}

#[test]
fn an_exported_state_is_adopted_with_its_remaining_open_time() {
    let f = fixture(BreakerPolicy {
        consecutive_failures: Some(nz(2)),
        ..quiet()
    });
    f.open_it();
    f.clock.advance(Duration::from_secs(3));
    let exported = f.breaker.export();
    assert_eq!(exported.state, State::Open);
    assert_eq!(exported.open_remaining, Some(Duration::from_secs(7)));

    // Another process: its own clock, its own breaker.
    let g = fixture(BreakerPolicy {
        consecutive_failures: Some(nz(2)),
        ..quiet()
    });
    g.clock.advance(Duration::from_secs(1000));
    assert_eq!(g.breaker.adopt(&exported), 0);
    let snapshot = g.breaker.snapshot();
    assert_eq!(snapshot.state, State::Open);
    assert_eq!(snapshot.open_remaining, Some(Duration::from_secs(7)));
    assert!(g.breaker.try_acquire().is_err(), "still rejecting");
    g.clock.advance(Duration::from_secs(7));
    assert!(g.breaker.try_acquire().is_ok_and(|p| p.is_probe()));

    // An operator state is neither exported into nor overwritten by an adoption.
    let h = fixture(quiet());
    h.breaker.set_mode(Mode::ForcedOpen);
    h.breaker.adopt(&exported);
    assert_eq!(h.breaker.state(), State::ForcedOpen);
}

#[test]
fn a_shadow_observes_without_deciding_and_records_elsewhere_only_when_closed() {
    let f = fixture(BreakerPolicy {
        consecutive_failures: Some(nz(2)),
        ..quiet()
    });
    assert!(f.breaker.observe(Outcome::failure(ms(1))));
    assert!(f.breaker.observe(Outcome::failure(ms(1))));
    assert_eq!(f.breaker.state(), State::Open);
    assert!(
        !f.breaker.observe(Outcome::success(ms(1))),
        "an open shadow would have rejected the call"
    );
    assert_eq!(f.breaker.snapshot().rejections, 1);

    let g = fixture(BreakerPolicy {
        consecutive_failures: Some(nz(2)),
        ..quiet()
    });
    g.breaker.record_elsewhere(Outcome::failure(ms(1)));
    g.breaker.record_elsewhere(Outcome::failure(ms(1)));
    assert_eq!(
        g.breaker.state(),
        State::Open,
        "outcomes from elsewhere trip it"
    );
    g.clock.advance(Duration::from_secs(10));
    let probe = g.breaker.try_acquire().expect("probe");
    g.breaker.record_elsewhere(Outcome::failure(ms(1)));
    assert_eq!(
        g.breaker.state(),
        State::HalfOpen,
        "a forwarded outcome is no probe"
    );
    g.breaker.record(probe, Outcome::success(ms(1)));
}

#[test]
fn record_says_whether_the_call_counted_in_the_current_episode() {
    let f = fixture(BreakerPolicy {
        consecutive_failures: Some(nz(1)),
        ..quiet()
    });
    let early = f.breaker.try_acquire().expect("admitted");
    let now = f.breaker.try_acquire().expect("admitted");
    assert!(f.breaker.record(now, Outcome::failure(ms(1))), "counted");
    assert_eq!(f.breaker.state(), State::Open);
    assert!(
        !f.breaker.record(early, Outcome::failure(ms(1))),
        "admitted in an episode that is over"
    );
    f.clock.advance(Duration::from_secs(10));
    let probe = f.breaker.try_acquire().expect("probe");
    assert!(
        !f.breaker.record(probe, Outcome::success(ms(1))),
        "a probe is not an ordinary call"
    );
    // A reset straight into an operator state is one move.
    let before = f.events.seen().len();
    f.breaker.reset_into(Mode::ForcedOpen);
    assert_eq!(f.breaker.state(), State::ForcedOpen);
    assert_eq!(f.events.seen().len(), before + 1);
}

#[test]
fn a_time_window_into_a_count_window_keeps_the_newest_calls_and_their_rates() {
    let sec = Duration::from_secs;
    let f = fixture(BreakerPolicy {
        window: WindowPolicy::Time {
            size: sec(10),
            buckets: nzu(10),
        },
        ..quiet()
    });
    f.clock.advance(sec(100));
    for _ in 0..10 {
        f.fail(); // older slice: all failures
    }
    f.clock.advance(sec(2));
    for i in 0..8 {
        // newer slice: half failures
        if i % 2 == 0 { f.fail() } else { f.succeed() }
    }
    let carried = f.breaker.reconfigure(BreakerPolicy {
        window: WindowPolicy::Count { size: nzu(4) },
        ..quiet()
    });
    assert_eq!(
        carried,
        Some(WindowCarried::Rebuilt {
            kept: 4,
            dropped: 14
        })
    );
    // Four of the newest slice: half of them failed, as in that slice.
    assert_eq!(f.breaker.snapshot().window.failures, 2);
}

#[test]
fn handed_over_counts_are_not_trusted_to_be_small_or_consistent() {
    let f = fixture(BreakerPolicy {
        window: WindowPolicy::Count { size: nzu(5) },
        ..quiet()
    });
    let hostile = BreakerExport {
        state: State::Open,
        open_remaining: Some(Duration::from_secs(1_000_000)),
        reopens: 0,
        consecutive_failures: 0,
        window: WindowContents::Slices(vec![
            Slice {
                age: Duration::ZERO,
                counts: WindowCounts {
                    calls: u32::MAX,
                    failures: u32::MAX,
                    slow: 0,
                },
            };
            3
        ]),
    };
    assert_eq!(f.breaker.adopt(&hostile), u32::MAX - 5);
    let snapshot = f.breaker.snapshot();
    assert_eq!(snapshot.window.calls, 5);
    assert_eq!(
        snapshot.open_remaining,
        Some(Duration::from_secs(10)),
        "cut to the longest this policy keeps a breaker open"
    );
}

#[test]
fn failures_in_window_opens_on_a_count_whatever_the_successes() {
    let f = fixture(BreakerPolicy {
        failures_in_window: Some(nz(3)),
        minimum_requests: nz(10),
        ..quiet()
    });
    for _ in 0..2 {
        f.fail();
        f.succeed();
        f.succeed();
    }
    assert_eq!(f.breaker.state(), State::Closed, "2 failures in the window");
    f.fail();
    assert_eq!(
        f.breaker.state(),
        State::Open,
        "the third, though 7 calls < minimum_requests"
    );
    let t = f.events.last().expect("event");
    assert_eq!(t.reason, Reason::Tripped(TripCause::FailuresInWindow));
    assert_eq!(t.reason.as_str(), "failures_in_window");
}
