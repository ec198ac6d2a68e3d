//! Breaker engine hot path: admit + record in closed state (1 and 2 threads on one
//! breaker), rejection while open, and recording across time-window rotations.
//!
//! Run: `cargo bench -p gateway-benches --bench breaker`

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use gateway::breaker::{Breaker, BreakerPolicy, CoarseClock, ManualClock, NoListener, Outcome};

fn breaker(policy: BreakerPolicy) -> Arc<Breaker> {
    Arc::new(Breaker::new(
        "bench",
        policy,
        Arc::new(CoarseClock),
        Arc::new(NoListener),
    ))
}

fn closed(c: &mut Criterion) {
    let b = breaker(BreakerPolicy::default());
    c.bench_function("closed/admit+record/1 thread", |bench| {
        bench.iter(|| {
            let permit = black_box(&b).try_acquire().expect("closed admits");
            b.record(permit, Outcome::success(Duration::from_millis(3)));
        })
    });

    // Two threads hammer the same breaker; time per operation per thread.
    c.bench_function("closed/admit+record/2 threads", |bench| {
        bench.iter_custom(|iters| {
            let b = breaker(BreakerPolicy::default());
            let start = Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..2 {
                    let b = Arc::clone(&b);
                    scope.spawn(move || {
                        for _ in 0..iters {
                            let permit = b.try_acquire().expect("closed admits");
                            b.record(permit, Outcome::success(Duration::from_millis(3)));
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
}

fn open(c: &mut Criterion) {
    let policy = BreakerPolicy {
        consecutive_failures: NonZeroU32::new(1),
        open_duration: Duration::from_secs(3600),
        ..BreakerPolicy::default()
    };
    let b = breaker(policy);
    b.record(
        b.try_acquire().expect("admits"),
        Outcome::failure(Duration::ZERO),
    );
    c.bench_function("open/reject", |bench| {
        bench.iter(|| black_box(black_box(&b).try_acquire().is_err()))
    });
}

fn rotation(c: &mut Criterion) {
    let clock = Arc::new(ManualClock::default());
    let b = Arc::new(Breaker::new(
        "bench",
        BreakerPolicy::default(),
        clock.clone(),
        Arc::new(NoListener),
    ));
    // Default window: 30s in 10 buckets; every record lands in a new 3s bucket.
    c.bench_function("time window/record with bucket rotation", |bench| {
        bench.iter(|| {
            clock.advance(Duration::from_secs(3));
            let permit = b.try_acquire().expect("closed admits");
            b.record(permit, Outcome::success(Duration::from_millis(3)));
        })
    });
}

criterion_group!(benches, closed, open, rotation);
criterion_main!(benches);
